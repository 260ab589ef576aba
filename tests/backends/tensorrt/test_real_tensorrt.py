"""Real TensorRT on a real GPU: build a tiny engine from a generated ONNX model, deserialize it,
run it and compare with ONNX Runtime. Runs on a Jetson (or any machine with TensorRT, cuda-python
and a GPU); skipped with the reason elsewhere."""

from __future__ import annotations

import pytest

from app import BuildConfig, InputProfile, PrecisionMode, Sha256Sidecar
from tests.helpers import tensorrt_unavailable_reason

pytestmark = pytest.mark.tensorrt


REASON = tensorrt_unavailable_reason()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("precision", [PrecisionMode.FP32, PrecisionMode.FP16])
def test_build_run_and_compare_with_onnxruntime(tmp_path, corpus, precision):
    import numpy as np
    import onnxruntime as ort
    import tensorrt as trt

    from app.backends.tensorrt.runner import DeviceMemory
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host

    host = probe_host(need_gpu=True).capabilities
    runtime = TensorRTRuntime(host)
    cfg = BuildConfig(precision=precision, model_name="dinov2_vpr", cache_root=tmp_path,
                      engine_path=tmp_path / runtime.artifact_name("dinov2_vpr", precision),
                      input_shapes={None: InputProfile.fixed((1, 3, 32, 32))}, workspace_mb=256,
                      verify="infer")
    entry = runtime.compile_engine(corpus["dinov2_vpr"], cfg)
    assert Sha256Sidecar.verify(entry.engine_path)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        entry.engine_path.read_bytes())
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    out = np.empty((1, 64), np.float32)
    memory = DeviceMemory()
    try:
        context = engine.create_execution_context()
        for name, array in (("pixels", x), ("descriptor", out)):
            ptr = memory.alloc(array.nbytes)
            if name == "pixels":
                memory.upload(ptr, array)
            context.set_tensor_address(name, ptr)
            if name == "descriptor":
                out_ptr = ptr
        assert context.execute_async_v3(memory.stream())
        memory.synchronize()
        memory.download(out, out_ptr)
    finally:
        memory.close()
    want = ort.InferenceSession(str(corpus["dinov2_vpr"])).run(None, {"pixels": x})[0]
    # fp32 builds clear TF32 (on by default, 10-bit mantissas on Orin): fp32 agrees to 1e-4.
    np.testing.assert_allclose(out, want, atol=1e-2 if precision is PrecisionMode.FP16 else 1e-4)


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_real_data_dependent_and_64_bit_models_build_and_warm_up(tmp_path):
    """NonZero's output has -1 dimensions (warm-up gives it an output allocator); an int64
    input and a float64 output come back as the release's parser maps them (8.x: int32)."""
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host
    from tests.backends.tensorrt.helpers import make_nonzero_model, make_tokens_model

    runtime = TensorRTRuntime(probe_host(need_gpu=True).capabilities)
    for name, model in (("nonzero", make_nonzero_model(tmp_path / "nonzero.onnx")),
                        ("tokens", make_tokens_model(tmp_path / "tokens.onnx"))):
        cfg = BuildConfig(precision=PrecisionMode.FP16, model_name=name, cache_root=tmp_path,
                          engine_path=tmp_path / runtime.artifact_name(name, PrecisionMode.FP16),
                          workspace_mb=256, verify="infer")
        assert Sha256Sidecar.verify(runtime.compile_engine(model, cfg).engine_path)


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_real_int8_on_dynamic_shapes_calibrates_at_opt(tmp_path, corpus):
    import numpy as np

    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host

    profile = InputProfile((1, 16, 64), (1, 64, 64), (1, 128, 64))
    folder = tmp_path / "calibration" / "lightglue"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        np.savez(folder / f"batch_{i}.npz", desc0=rng.standard_normal(profile.opt, np.float32),
                 desc1=rng.standard_normal(profile.opt, np.float32))
    runtime = TensorRTRuntime(probe_host(need_gpu=True).capabilities)
    cfg = BuildConfig(precision=PrecisionMode.INT8, model_name="lightglue", cache_root=tmp_path,
                      engine_path=tmp_path / runtime.artifact_name("lightglue", PrecisionMode.INT8),
                      input_shapes={"desc0": profile, "desc1": profile}, calibration_dir=folder,
                      workspace_mb=256, verify="infer")
    assert Sha256Sidecar.verify(runtime.compile_engine(corpus["lightglue"], cfg).engine_path)
    assert len(list((tmp_path / "calibration").glob("lightglue__*.calib"))) == 1
