"""The accuracy gate on a real TensorRT engine: build the demo models with the TensorRT backend
and check them through the runner the backend opens (TrtRunner) and cuda-python's device
buffers. Runs on a Jetson (or any machine with TensorRT, cuda-python and a GPU); skipped with
the reason elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import BuildConfig, InputProfile, PrecisionMode
from tests.helpers import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()

pytestmark = [pytest.mark.tensorrt,
              pytest.mark.skipif(REASON is not None, reason=REASON or "")]


# fp32 included: the backend clears BuilderFlag.TF32 for fp32 builds, so the fp32 bound (which
# TF32's 10-bit mantissas would break) holds.
@pytest.mark.parametrize("precision", list(PrecisionMode))
def test_real_engines_pass_their_precision_default(tmp_path, corpus, precision):
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host
    from app.verify.accuracy import check_accuracy

    runtime = TensorRTRuntime(probe_host(need_gpu=True).capabilities)
    shapes: dict[str | None, InputProfile] = {None: InputProfile.fixed((1, 3, 64, 64))}
    cfg = BuildConfig(precision=precision, model_name="aliked", cache_root=tmp_path,
                      engine_path=tmp_path / runtime.artifact_name("aliked", precision),
                      input_shapes=shapes, workspace_mb=256,
                      calibration_dir=corpus["calibration"] / "aliked")
    entry = runtime.compile_engine(corpus["aliked"], cfg)
    runner = runtime.open_runner(entry.engine_path, cfg)
    try:
        report = check_accuracy(corpus["aliked"], runner, model_name="aliked", precision=precision,
                                input_shapes=shapes, calibration_dir=cfg.calibration_dir)
    finally:
        runner.close()
    assert report.passed, report.to_json()


# -- the mission networks on the real release (only a machine with TensorRT can say) ------------
def _runtime():
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host

    return TensorRTRuntime(probe_host(need_gpu=True).capabilities)


def _config(runtime, tmp_path, name, precision=PrecisionMode.FP16, **kw):
    return BuildConfig(precision=precision, model_name=name, cache_root=tmp_path,
                       engine_path=tmp_path / runtime.artifact_name(name, precision),
                       workspace_mb=512, verify="infer", **kw)


def test_real_aliked_with_deformconv_builds_from_10_1_and_loads_in_a_fresh_process(tmp_path):
    """10.1+: the DeformConv plugin parses and the engine deserializes in a process that only
    deserializes (init_libnvinfer_plugins there too); before 10.1: refused with exit 65."""
    import subprocess
    import sys

    from app import ModelDataError
    from app.backends.tensorrt.api import parse_version
    from tests.backends.tensorrt.networks import make_aliked

    runtime = _runtime()
    onnx = make_aliked(tmp_path / "aliked.onnx")
    cfg = _config(runtime, tmp_path, "aliked", input_shapes={None: InputProfile.fixed((1, 3, 16, 16))})
    if parse_version(runtime.version()) < (10, 1):
        with pytest.raises(ModelDataError, match="DeformConv"):
            runtime.compile_engine(onnx, cfg)
        return
    engine = runtime.compile_engine(onnx, cfg).engine_path
    code = ("import numpy as np, sys; from app.backends.tensorrt.runner import TrtRunner; "
            "r = TrtRunner(__import__('pathlib').Path(sys.argv[1]), 'aliked'); "
            "print(r.run({'image': np.zeros((1, 3, 16, 16), np.float32)})['descriptors'].shape)")
    done = subprocess.run([sys.executable, "-c", code, str(engine)], capture_output=True,
                          cwd=Path(__file__).resolve().parents[2],
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(1, 8, 16, 16)" in done.stdout


def test_real_lightglue_matches_come_back_in_their_data_dependent_shape(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from tests.backends.tensorrt.networks import make_lightglue

    runtime = _runtime()
    onnx = make_lightglue(tmp_path / "lightglue.onnx")
    profile = InputProfile((1, 8, 16), (1, 32, 16), (1, 64, 16))
    cfg = _config(runtime, tmp_path, "lightglue", PrecisionMode.FP32,
                  input_shapes={"desc0": profile, "desc1": profile})
    runner = runtime.open_runner(runtime.compile_engine(onnx, cfg).engine_path, cfg)
    rng = np.random.default_rng(1)
    feeds = {"desc0": rng.random((1, 20, 16), dtype=np.float32),
             "desc1": rng.random((1, 24, 16), dtype=np.float32)}
    try:
        got = runner.run(feeds)
    finally:
        runner.close()
    want = ort.InferenceSession(str(onnx)).run(["matches"], feeds)[0]
    assert got["matches"].ndim == 2 and got["matches"].shape[1] == 3
    assert abs(len(got["matches"]) - len(want)) <= max(2, len(want) // 50)


@pytest.mark.parametrize("opset", [14, 17])
def test_real_dinov2_in_fp16_keeps_its_accuracy(tmp_path, opset):
    """Below opset 17 the decomposed LayerNorm is kept in FP32 (keep_fp32's default)."""
    from app.verify.accuracy import check_accuracy
    from tests.backends.tensorrt.networks import make_dinov2

    runtime = _runtime()
    onnx = make_dinov2(tmp_path / "dinov2.onnx", opset=opset)
    shapes: dict[str | None, InputProfile] = {None: InputProfile.fixed((1, 3, 28, 28))}
    cfg = _config(runtime, tmp_path, "dinov2", input_shapes=shapes)
    runner = runtime.open_runner(runtime.compile_engine(onnx, cfg).engine_path, cfg)
    try:
        report = check_accuracy(onnx, runner, model_name="dinov2", precision=PrecisionMode.FP16,
                                input_shapes=shapes)
    finally:
        runner.close()
    assert report.passed, report.to_json()
