"""TensorRTRuntime driven through the recording stand-in (tests name it: FakeTensorRT), for each
supported API shape; assertions are on what the runtime asked TensorRT to do."""

from __future__ import annotations

import json
import logging

import pytest

from app import (
    BackendUnavailableError,
    CalibrationCacheError,
    EngineBuildError,
    InputProfile,
    ModelDataError,
    PrecisionMode,
    Sha256Sidecar,
)
from app.backends.tensorrt.runtime import TensorRTRuntime, precision_in_effect
from app.cancel import CANCEL
from app.errors import BuildCancelledError
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import (
    ALIKED,
    DYN,
    VERSIONS,
    calibration_cache_file,
    config,
    host,
    make_nonzero_model,
    runtime_for,
)


@pytest.fixture(params=VERSIONS)
def fake(request):
    with FakeTensorRT(request.param) as module:
        yield module


def test_fp16_static_model(fake, tmp_path, corpus):
    cfg = config(tmp_path, "dinov2_vpr", input_shapes={None: InputProfile.fixed((1, 3, 32, 32))},
                 workspace_mb=512, optimization_level=5)
    entry = runtime_for(fake).compile_engine(corpus["dinov2_vpr"], cfg)
    assert Sha256Sidecar.verify(entry.engine_path)
    flags = next(c for c in fake.calls if c[0] == "create_network")[1]
    assert flags == (1 if fake.version < (10, 0) else 0)  # EXPLICIT_BATCH only before 10
    assert ("set_memory_pool_limit", "WORKSPACE", 512 << 20) in fake.calls
    opt_level = ("set", "IBuilderConfig.builder_optimization_level", 5)
    assert (opt_level in fake.calls) == (fake.version >= (8, 6))
    assert fake.flags_built() == ["FP16", "TF32"]  # TF32 is on by default in every release
    assert not [c for c in fake.calls if c[0] == "set_shape"]  # static: no profile needed
    assert entry.extras["backend_version"] == fake.__version__


def test_dynamic_model_gets_one_profile(fake, tmp_path, corpus):
    cfg = config(tmp_path, "lightglue", PrecisionMode.FP32, input_shapes={"desc0": DYN, "desc1": DYN})
    runtime_for(fake).compile_engine(corpus["lightglue"], cfg)
    shapes = [c for c in fake.calls if c[0] == "set_shape"]
    assert sorted(shapes) == [("set_shape", n, DYN.min, DYN.opt, DYN.max) for n in ("desc0", "desc1")]
    assert fake.flags_built() == []  # fp32 without TF32


def test_open_dynamic_dims_are_a_clear_error(fake, tmp_path, corpus):
    with pytest.raises(ModelDataError, match=r"desc0.*dynamic dimensions"):
        runtime_for(fake).compile_engine(corpus["lightglue"], config(tmp_path, "lightglue"))


def test_parser_errors_are_all_listed(fake, tmp_path, corpus):
    fake.parser_errors = [(8, 3, "Unsupported operator: Foo"), (2, 7, "Invalid attribute")]
    with pytest.raises(EngineBuildError) as caught:
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    message = str(caught.value)
    assert "[8] node 3: Unsupported operator: Foo" in message and "[2] node 7: Invalid attribute" in message
    assert not any(p.suffix == ".engine" for p in tmp_path.iterdir())


def test_build_returning_none_carries_the_log(fake, tmp_path, corpus):
    fake.fail_build = True
    with pytest.raises(EngineBuildError, match="out of memory while building"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    assert not list(tmp_path.glob("*.engine*"))


def test_engine_that_does_not_deserialize_is_not_published(fake, tmp_path, corpus):
    fake.corrupt_engine = True
    # the runtime logger's own words say why (here: the stand-in's, as TensorRT words it)
    with pytest.raises(EngineBuildError, match=r"does not deserialize: .*Magic tag does not match"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    assert not list(tmp_path.glob("*.engine*"))


def test_int8_calibrates_from_batches_then_reuses_the_cache(fake, tmp_path, corpus):
    cudart = fake.gpu
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert fake.flags_built() == ["FP16", "INT8", "TF32"]
    assert fake.batches == 4
    host_to_device = [n for kind, n in cudart.copies if kind == 1]
    assert host_to_device == [1 * 3 * 64 * 64 * 4] * 4          # one batch at a time
    assert cudart.ever_allocated and not cudart.allocated       # every buffer freed
    [cache] = (tmp_path / "calibration").glob(f"aliked__trt{fake.__version__}__*.calib")
    assert cache.read_bytes() == b"calibration-table-4"
    fake.batches = 0
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert fake.batches == 0  # the cache for the same data was read back; no batch fed


def test_int8_without_data_uses_an_existing_cache_or_fails(fake, tmp_path, corpus):
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=tmp_path / "missing")
    with pytest.raises(CalibrationCacheError):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    cache = calibration_cache_file(tmp_path, fake.__version__, "aliked", corpus["aliked"], ALIKED)
    cache.parent.mkdir()
    cache.write_bytes(b"t")
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert fake.batches == 0


def test_timing_cache_round_trips_and_merges(fake, tmp_path, corpus):
    cfg = config(tmp_path, "aliked")
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    [timing] = (tmp_path / "timing").glob("*.timing")
    assert timing.name == f"trt{fake.__version__}__sm87__orin-nvgpu.timing"
    first = timing.read_bytes()
    prefix = b"TC1|" + fake.device_props.encode() + b"|"  # the stand-in's serialized form
    assert first == prefix + b"[timings]"
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert ("create_timing_cache", first) in fake.calls      # loaded back before the build
    assert timing.read_bytes() == prefix + b"[timings],[timings]"


def test_dla_core_with_fallback_and_missing_core(fake, tmp_path, corpus):
    fake.dla_cores = 2
    runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked", dla_core=1))
    assert ("set", "IBuilderConfig.DLA_core", 1) in fake.calls
    assert "GPU_FALLBACK" in fake.flags_built()
    with pytest.raises(BackendUnavailableError, match=r"dla_core 2 requested.*2 DLA core"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked", dla_core=2))


def test_warm_up_inference_runs(fake, tmp_path, corpus):
    cfg = config(tmp_path, "lightglue", input_shapes={"desc0": DYN, "desc1": DYN}, verify="infer")
    runtime_for(fake).compile_engine(corpus["lightglue"], cfg)
    assert ("execute_async_v3", 7) in fake.calls


def test_two_tensorrt_installs_are_refused(tmp_path, corpus):
    with FakeTensorRT("10.3.0") as fake:
        other = TensorRTRuntime(host("10.3.1"), trt_module=fake.module)
        with pytest.raises(BackendUnavailableError, match="two TensorRT installs"):
            other.compile_engine(corpus["aliked"], config(tmp_path, "aliked"))


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3"])
def test_progress_events_are_throttled_and_cancel_stops_the_build(version, tmp_path, corpus, caplog):
    with FakeTensorRT(version) as fake:
        runtime = runtime_for(fake)
        runtime.logger = logging.getLogger("test.progress")
        with caplog.at_level(logging.INFO, logger="test.progress"):
            runtime.compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
        progress = [r.kv for r in caplog.records if getattr(r, "kind", "") == "c10.engine.compile.progress"]
        assert progress[0]["step"] == 0 and progress[-1]["step"] == progress[-1]["total"] == 4
        assert len(progress) < 6  # 4 steps inside the throttle interval: first and last only
        fake.on_step = lambda step: CANCEL.set() if step == 1 else None
        try:
            with pytest.raises(BuildCancelledError):
                runtime.compile_engine(corpus["aliked"], config(tmp_path / "c", "aliked"))
        finally:
            CANCEL.clear()
        assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.engine"))


def test_warm_up_gives_a_data_dependent_output_an_output_allocator(fake, tmp_path):
    model = make_nonzero_model(tmp_path / "nonzero.onnx")
    entry = runtime_for(fake).compile_engine(model, config(tmp_path, "nonzero", verify="infer"))
    assert Sha256Sidecar.verify(entry.engine_path)
    assert ("execute_async_v3", 7) in fake.calls
    assert not [c for c in fake.calls if c[0] in ("overrun", "enqueue_error", "swallowed")]
    assert {("IExecutionContext", "set_output_allocator"), ("IOutputAllocator", "reallocate_output"),
            ("IOutputAllocator", "notify_shape")} <= fake.touched


def _timing_events(caplog) -> list[tuple[str, str]]:
    return [(r.kind, r.getMessage()) for r in caplog.records
            if getattr(r, "kind", "").startswith("c10.engine.timing_cache.")]


def test_a_timing_cache_of_another_device_is_replaced_with_a_warning(fake, tmp_path, corpus, caplog):
    cfg = config(tmp_path, "aliked")
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    [timing] = (tmp_path / "timing").glob("*.timing")
    fake.device_props = "sm87-8sm-7.4GiB"  # same name and sm, other properties (Orin NX 8GB)
    with caplog.at_level(logging.WARNING, logger="engine_init"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    [(kind, message)] = _timing_events(caplog)
    assert kind == "c10.engine.timing_cache.reset" and "device with other properties" in message
    assert timing.read_bytes() == b"TC1|sm87-8sm-7.4GiB|[timings]"  # this device's timings, alone


def test_an_unreadable_timing_cache_is_replaced_with_a_warning(fake, tmp_path, corpus, caplog):
    (tmp_path / "timing").mkdir()
    timing = tmp_path / "timing" / f"trt{fake.__version__}__sm87__orin-nvgpu.timing"
    timing.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="engine_init"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    [(kind, message)] = _timing_events(caplog)
    assert kind == "c10.engine.timing_cache.reset" and "unreadable" in message
    assert timing.read_bytes().endswith(b"|[timings]")


def test_no_timing_cache_back_from_tensorrt_is_a_warning_not_a_crash(fake, tmp_path, corpus, caplog,
                                                                     monkeypatch):
    from tests.backends.tensorrt.fake_build import IBuilderConfig

    monkeypatch.setattr(IBuilderConfig, "set_timing_cache", lambda self, cache, ignore: False)
    with caplog.at_level(logging.WARNING, logger="engine_init"):
        entry = runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    assert Sha256Sidecar.verify(entry.engine_path)
    kinds = [kind for kind, _ in _timing_events(caplog)]
    assert kinds == ["c10.engine.timing_cache.reset", "c10.engine.timing_cache.unsaved"]
    assert not (tmp_path / "timing").exists()


def test_the_build_thread_works_on_cuda_device_not_on_device_0(tmp_path, corpus):
    """The compiler builds in a fresh thread (app.cancel.call_cancellable), whose current
    CUDA device is 0 whatever cuda_device the host probe read."""
    import threading

    from tests.backends.tensorrt.fake_cuda import FakeCudart

    fake = FakeTensorRT("10.3.0", gpu=FakeCudart(devices=2))
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked",
                 verify="infer")
    thread = threading.Thread(target=runtime_for(fake, cuda_device=1).compile_engine,
                              args=(corpus["aliked"], cfg))
    thread.start()
    thread.join()
    assert ("builder", 1) in fake.calls and ("build_device", 1, 1) in fake.calls
    assert [c for c in fake.calls if c[0] == "deserialize"] == [("deserialize", -1, 1)]
    assert ("execute_device", 1) in fake.calls
    assert {fake.gpu.device_of[p] for p in fake.gpu.ever_allocated} == {1}
    assert fake.gpu.current() == 0  # this (the test's) thread was left alone


def test_a_cuda_device_that_does_not_exist_is_a_probe_error(tmp_path, corpus):
    from app.errors import HostProbeError

    fake = FakeTensorRT("10.3.0")
    with pytest.raises(HostProbeError, match=r"cudaSetDevice\(3\) failed: cudaErrorInvalidDevice"):
        runtime_for(fake, cuda_device=3).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    assert not [c for c in fake.calls if c[0] == "builder"]


@pytest.mark.parametrize(("precision", "shapes", "says"), [
    (PrecisionMode.FP32, {"desc0": InputProfile.fixed((1, 16, 64)), "desc1": InputProfile.fixed((1, 16, 64))},
     r"backbones\[lightglue\]\.dla_core: a DLA runs fp16 or int8 only"),
    (PrecisionMode.FP16, {"desc0": DYN, "desc1": InputProfile.fixed((1, 16, 64))},
     r"backbones\[lightglue\]\.dla_core: a DLA runs fixed shapes only.*\['desc0'\]"),
])
def test_dla_with_what_a_dla_cannot_run_is_refused(fake, tmp_path, corpus, precision, shapes, says):
    """TensorRT would build these for the GPU alone, silently (GPU fallback)."""
    from app.cli import exit_code_for
    from app.errors import ConfigError

    fake.dla_cores = 2
    cfg = config(tmp_path, "lightglue", precision, input_shapes=shapes, dla_core=0)
    with pytest.raises(ConfigError, match=says) as caught:
        runtime_for(fake).compile_engine(corpus["lightglue"], cfg)
    assert exit_code_for(caught.value) == 78
    assert not [c for c in fake.calls if c[0] == "builder"]


def test_a_dla_engine_is_built_for_and_deserialized_on_its_core(fake, tmp_path, corpus):
    fake.dla_cores = 2
    fixed = InputProfile.fixed((1, 16, 64))  # a dynamic ONNX input given one shape is fine
    cfg = config(tmp_path, "lightglue", input_shapes={"desc0": fixed, "desc1": fixed}, dla_core=1)
    entry = runtime_for(fake).compile_engine(corpus["lightglue"], cfg)
    assert json.loads(entry.engine_path.read_bytes())["dla"] == 1  # the stand-in's engine document
    runtime_set = fake.calls.index(("set", "Runtime.DLA_core", 1))
    assert fake.calls[runtime_set + 1][:2] == ("deserialize", 1)


def test_fp32_clears_tf32_and_fp16_keeps_it(fake, tmp_path, corpus):
    runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked", PrecisionMode.FP32))
    assert "TF32" not in fake.flags_built()
    runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path / "h", "aliked"))
    assert fake.flags_built() == ["FP16", "TF32"]


def test_calibration_buffers_are_freed_when_the_build_fails(fake, tmp_path, corpus):
    fake.fail_build = True
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
    with pytest.raises(EngineBuildError, match="out of memory"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert fake.gpu.ever_allocated and not fake.gpu.allocated


@pytest.mark.parametrize(("level", "forwarded"), [(logging.INFO, set()),
                                                  (logging.DEBUG, {"INFO", "VERBOSE"})])
def test_verbose_builder_messages_reach_the_logger_only_under_debug(fake, tmp_path, corpus, level,
                                                                   forwarded, caplog):
    runtime = runtime_for(fake)
    runtime.logger = logging.getLogger("test.trt.verbose")
    runtime.logger.setLevel(level)
    with caplog.at_level(level, logger="test.trt.verbose"):
        runtime.compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    severities = {r.kv["severity"] for r in caplog.records
                  if getattr(r, "kind", "") == "c10.engine.tensorrt.log"}
    assert severities & {"INFO", "VERBOSE"} == forwarded


# What a TensorRT engine's layers run in, read from the engine inspector's JSON as each release
# writes it (through the compiler and the stand-in: tests/verify/test_gate_precision.py).
def _layer(kind, fmt):
    return {"Name": kind, "LayerType": kind, "Inputs": [{"Name": "t", "Format/Datatype": fmt}]}


def test_tensorrt_layers_are_counted_in_their_first_inputs_format():
    info = json.dumps({"Layers": [
        _layer("CaskConvolution", "Four wide channel vectorized row major Int8 format"),
        _layer("CaskGemmMatrixMultiply", "Half"),  # the short form, without a context
        _layer("gemm", "Row major linear FP32"),
        _layer("PointWiseV2", "Int8"), _layer("Reformat", "Float")]})
    effect = precision_in_effect(info, "int8")
    assert effect is not None
    assert (effect.compute_nodes, effect.in_precision) == (3, 1)
    assert effect.ran == {"fp16": 1, "fp32": 1, "int8": 1} and effect.ops["Reformat"] == 1
    assert effect.what_ran() == "1 in fp16, 1 in fp32, 1 in int8"


def test_an_engine_with_layer_names_only_cannot_say():
    assert precision_in_effect(json.dumps({"Layers": ["conv1", "relu1"]}), "fp16") is None
    assert precision_in_effect("conv1\nrelu1", "fp16") is None


def test_bfloat16_and_uint8_are_counted_as_what_they_are():
    info = json.dumps({"Layers": [_layer("CaskConvolution", "Row major linear BFloat16 format"),
                                  _layer("gemm", "UInt8"), _layer("gemm", "Int8")]})
    effect = precision_in_effect(info, "int8")
    assert effect is not None and effect.ran == {"bf16": 1, "int8": 1, "uint8": 1}


def test_a_myelin_foreign_node_of_8_6_is_counted_apart_as_not_inspectable():
    info = json.dumps({"Layers": [
        _layer("CaskConvolution", "Channel major FP16 format where channel % 8 == 0"),
        {"Name": "{ForeignNode[/blocks.0/norm1/ReduceMean.../head/gem]}", "LayerType": "Myelin",
         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}]}]})
    effect = precision_in_effect(info, "fp16")
    assert effect is not None and (effect.compute_nodes, effect.opaque) == (1, 1)
    assert effect.describe() == ("1 of 1 compute nodes run in fp16 (+1 Myelin region(s) this "
                                 "TensorRT cannot inspect)")
    assert effect.as_dict()["not_inspectable"] == 1
