"""The TensorRT runner, through a computing stand-in (TensorRT cannot run here), and the names
it uses checked against the real bindings' identifiers of each supported release."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from app.errors import BackendUnavailableError, EngineBuildError
from app.values import InputProfile, PrecisionMode
from app.verify.accuracy import AccuracySettings, check_accuracy
from app.verify.trt_runner import TrtRunner
from tests.verify import trt_standin
from tests.verify.trt_standin import HostBuffers, StandinTensorRT

IDENTIFIERS = Path(__file__).parents[1] / "backends" / "tensorrt" / "identifiers"
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
                            settings=AccuracySettings(samples_path=samples))
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
