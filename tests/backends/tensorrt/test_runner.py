"""The TensorRT runner, through a computing stand-in (TensorRT cannot run here), and the names
it uses checked against the real bindings' identifiers of each supported release."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from app.backends.tensorrt.runner import TrtRunner
from app.config_sections import AccuracyConfig
from app.errors import BackendUnavailableError, EngineBuildError
from app.values import InputProfile, PrecisionMode
from app.verify.accuracy import check_accuracy
from tests.backends.tensorrt import trt_standin
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import VERSIONS, config, make_nonzero_model, runtime_for
from tests.backends.tensorrt.trt_standin import HostBuffers, ILogger, StandinTensorRT

IDENTIFIERS = Path(__file__).parent / "identifiers"
RELEASES = ("8.6.1", "10.3.0", "10.13.3")
DYN = InputProfile((1, 1, 64), (1, 16, 64), (1, 64, 64))


@cache
def identifiers(release: str) -> frozenset[str]:
    lines = (IDENTIFIERS / f"trt-{release}.txt").read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def unknown(names: set[str], release: str) -> list[str]:
    ids = identifiers(release)
    return sorted(n for n in names if n not in ids and not any(i.endswith(n) for i in ids))


def _runner(onnx: Path, version: str = "10.3.0", degrade: str | None = None) -> tuple[TrtRunner, HostBuffers]:
    memory = HostBuffers()
    trt = StandinTensorRT(version, degrade)
    return TrtRunner(onnx.read_bytes(), "m", trt=trt, memory=memory), memory


def test_fp32_engine_through_the_runner_passes(corpus):
    runner, memory = _runner(corpus["dinov2_vpr"])
    report = check_accuracy(corpus["dinov2_vpr"], runner, model_name="dinov2_vpr",
                            precision=PrecisionMode.FP32,
                            input_shapes={None: InputProfile.fixed((1, 3, 32, 32))})
    assert report.passed and report.outputs[0].rel_l2 < 1e-6
    assert len(memory.buffers) == 2  # one input, one output: reused over the 4 samples
    runner.close()
    assert memory.closed


def test_half_precision_outputs_fail_fp32_and_pass_fp16(corpus):
    for precision, passed in ((PrecisionMode.FP32, False), (PrecisionMode.FP16, True)):
        runner, _ = _runner(corpus["dinov2_vpr"], degrade="fp16")
        report = check_accuracy(corpus["dinov2_vpr"], runner, model_name="dinov2_vpr",
                                precision=precision,
                                input_shapes={None: InputProfile.fixed((1, 3, 32, 32))})
        runner.close()
        assert report.passed is passed


def test_dynamic_shapes_and_growing_buffers(corpus, tmp_path):
    samples = tmp_path / "s"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate((4, 60)):
        np.savez(samples / f"{i}.npz", desc0=rng.random((1, n, 64), dtype=np.float32),
                 desc1=rng.random((1, 7, 64), dtype=np.float32))
    runner, _ = _runner(corpus["lightglue"], version="8.6.1")
    report = check_accuracy(corpus["lightglue"], runner, model_name="lightglue",
                            precision=PrecisionMode.FP32, input_shapes={"desc0": DYN, "desc1": DYN},
                            settings=AccuracyConfig(samples_path=samples))
    assert report.passed and report.outputs[0].shape == (1, 60, 7)


def test_an_engine_that_does_not_deserialize_is_a_build_error(tmp_path):
    junk = tmp_path / "junk.engine"
    junk.write_bytes(b"not an engine")
    with pytest.raises(EngineBuildError, match=r"cannot deserialize .* magic tag"):
        TrtRunner(junk, "m", trt=StandinTensorRT("10.3.0"), memory=HostBuffers())


def test_without_tensorrt_the_runner_is_unavailable(monkeypatch, corpus):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="needs TensorRT"):
        TrtRunner(corpus["aliked"], "m", memory=HostBuffers())


@pytest.mark.parametrize("release", RELEASES)
def test_every_name_the_runner_uses_exists_in_the_real_bindings(corpus, release):
    trt_standin.NAMES.clear()
    runner, _ = _runner(corpus["lightglue"], version=release)
    runner.run({"desc0": np.zeros((1, 3, 64), np.float32), "desc1": np.zeros((1, 5, 64), np.float32)})
    names = set(trt_standin.NAMES)
    assert {"Runtime", "deserialize_cuda_engine", "create_execution_context", "num_io_tensors",
            "get_tensor_name", "get_tensor_mode", "TensorIOMode", "get_tensor_dtype",
            "set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"} <= names
    assert unknown(names, release) == []
    assert unknown({"get_binding_shape", "execute_async_v2"}, "10.3.0") == [
        "execute_async_v2", "get_binding_shape"]  # the check can fail: TensorRT 8 names are gone


# -- the mission networks' needs (issue: plugins, data-dependent outputs, device, DLA) ---------
def test_data_dependent_outputs_come_back_in_their_real_shape(tmp_path):
    """LightGlue's ``matches`` come from NonZero (-1 dims): an output allocator gets the buffer
    and the notified shape; FP16 finding another count is a healthy engine, not a failed run."""
    from tests.backends.tensorrt.networks import make_lightglue

    onnx = make_lightglue(tmp_path / "lightglue.onnx")
    rng = np.random.default_rng(3)
    feeds = {"desc0": rng.random((1, 6, 16), dtype=np.float32),
             "desc1": rng.random((1, 9, 16), dtype=np.float32)}
    runner, _ = _runner(onnx)
    exact = runner.run(feeds)
    assert exact["scores"].shape == (1, 6, 9) and exact["matches"].shape[1] == 3
    assert exact["matches"].dtype == np.int64
    moved = np.array([[0, 1, 2]], np.int64)  # one match instead of many under FP16
    trt = StandinTensorRT("8.6.1", "fp16", fp16_outputs={"matches": moved})
    half = TrtRunner(onnx.read_bytes(), "lightglue", trt=trt, memory=HostBuffers()).run(feeds)
    assert half["matches"].tolist() == [[0, 1, 2]]


def test_the_runner_runs_on_cuda_device_and_its_dla_core(corpus):
    """x86 with two GPUs and cuda_device 1: the engine is deserialized with device 1 current and
    every buffer is allocated there (it used to switch the thread to device 0); a DLA engine is
    deserialized with Runtime.DLA_core set."""
    from tests.backends.tensorrt.fake_cuda import FakeCudart

    gpu = FakeCudart(devices=2, integrated=False)
    trt = StandinTensorRT("10.3.0", gpu=gpu)
    memory = HostBuffers(trt)
    runner = TrtRunner(corpus["dinov2_vpr"].read_bytes(), "dinov2_vpr", trt=trt, memory=memory,
                       cudart=gpu, cuda_device=1, dla_core=1)
    runner.run({"pixels": np.zeros((1, 3, 32, 32), np.float32)})
    assert [c for c in trt._calls if c[0] == "deserialize"] == [("deserialize", 1, 1)]
    assert memory.devices and set(memory.devices) == {1}
    assert ("execute", 1) in trt._calls


def test_an_engine_holding_a_plugin_deserializes_in_a_process_that_never_parsed(tmp_path):
    """ALIKED's DeformConv is a plugin layer on 10.x: the runner's process registers the plugin
    library (with the process logger) before deserializing."""
    from tests.backends.tensorrt.networks import make_aliked

    onnx = make_aliked(tmp_path / "aliked.onnx")
    trt = StandinTensorRT("10.3.0")
    runner = TrtRunner(onnx.read_bytes(), "aliked", trt=trt, memory=HostBuffers())
    assert trt._calls[0] == ("init_libnvinfer_plugins", "")
    out = runner.run({"image": np.zeros((1, 3, 16, 16), np.float32)})
    assert out["descriptors"].shape == (1, 8, 16, 16)


def test_host_located_tensors_get_host_memory(corpus):
    """A shape tensor (TensorLocation.HOST) must not be given a device pointer."""
    trt = StandinTensorRT("10.3.0", host_tensors=("descriptor",))
    memory = HostBuffers(trt)
    runner = TrtRunner(corpus["dinov2_vpr"].read_bytes(), "m", trt=trt, memory=memory)
    out = runner.run({"pixels": np.ones((1, 3, 32, 32), np.float32)})
    assert not [c for c in trt._calls if c[0] == "device_pointer_for_host_tensor"]
    assert np.isfinite(out[runner.outputs[0]]).all()
    assert len(memory.buffers) == 1  # the input's only: the HOST output is host memory


@pytest.mark.parametrize("release", RELEASES)
def test_the_names_of_plugins_allocators_and_locations_exist_in_the_real_bindings(tmp_path, release):
    from tests.backends.tensorrt.networks import make_lightglue
    from tests.backends.tensorrt.release_names import allowed

    onnx = make_lightglue(tmp_path / "lightglue.onnx")
    trt_standin.NAMES.clear()
    runner = TrtRunner(onnx.read_bytes(), "m", trt=StandinTensorRT(release), memory=HostBuffers(),
                       dla_core=0)
    runner.run({"desc0": np.ones((1, 3, 16), np.float32), "desc1": np.ones((1, 4, 16), np.float32)})
    used = set(trt_standin.NAMES)
    assert {"init_libnvinfer_plugins", "IOutputAllocator", "set_output_allocator",
            "get_tensor_location", "TensorLocation", "is_shape_inference_io", "DLA_core"} <= used
    assert unknown(used, release) == []
    # the overrides TensorRT calls by name (pyCore.cpp's getOverride), defined by the runner
    assert allowed("reallocate_output", release) and allowed("notify_shape", release)


def test_a_failed_sample_quotes_tensorrt_and_close_twice_is_harmless(corpus):
    """The runner's sink stays on the process logger until close: TensorRT's error for a failed
    enqueue reaches the message."""
    from app.backends.tensorrt.api import process_logger

    trt = StandinTensorRT("10.3.0")
    runner = TrtRunner(corpus["dinov2_vpr"].read_bytes(), "m", trt=trt, memory=HostBuffers())
    runner.context.execute_async_v3 = lambda stream: (process_logger(trt).log(
        ILogger.Severity.ERROR, "IExecutionContext::enqueueV3: illegal address"), False)[1]
    with pytest.raises(EngineBuildError, match=r"failed to run a sample: .*illegal address"):
        runner.run({"pixels": np.zeros((1, 3, 32, 32), np.float32)})
    runner.close()
    runner.close()
    assert process_logger(trt).sinks == []


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero"])
def test_an_engine_path_that_is_no_file_is_refused_at_once(tmp_path, kind):
    from app.cache.fsread import UnsafeFileError
    from tests.helpers import plant, within

    path = tmp_path / "m.engine"
    plant(path, kind, tmp_path / "outside")
    with pytest.raises(UnsafeFileError, match=r"FIFO|device"):
        within(2, lambda: TrtRunner(path, "m", trt=StandinTensorRT("10.3.0"), memory=HostBuffers()))


# The warm-up after a build runs through the runner: host-located tensors get host memory,
# and an output allocator that fails is an error naming it rather than a crash inside TensorRT.
@pytest.mark.parametrize("version", VERSIONS)
def test_a_host_located_output_gets_host_memory_in_the_warm_up(tmp_path, corpus, version):
    """"If the TensorLocation of the tensor is kHOST, the pointer must point to a host buffer"
    (TensorRT v10.3.0 include/NvInferRuntime.h:3991): the stand-in refuses a device pointer."""
    fake = FakeTensorRT(version)
    fake.host_tensors = {"scores"}
    runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked", verify="infer"))
    assert ("execute_async_v3", 7) in fake.calls
    assert not [c for c in fake.calls if c[0] == "device_pointer_for_host_tensor"]


def test_an_output_allocator_that_fails_is_named(tmp_path, monkeypatch):
    from app.backends.tensorrt import runner

    fake = FakeTensorRT("10.3.0")
    model = make_nonzero_model(tmp_path / "nonzero.onnx")
    real_alloc = runner.DeviceMemory.alloc
    calls = []

    def alloc(self, nbytes):
        calls.append(nbytes)
        if len(calls) > 1:  # the input's buffer, then the allocator's: out of memory
            raise MemoryError("cudaMalloc: out of memory")
        return real_alloc(self, nbytes)

    monkeypatch.setattr(runner.DeviceMemory, "alloc", alloc)
    with pytest.raises(EngineBuildError, match=r"output allocator failed.*out of memory"):
        runtime_for(fake).compile_engine(model, config(tmp_path, "nonzero", verify="infer"))
