"""The warm-up's I/O on the stand-in (TensorRT cannot run here): host-located tensors get host
memory, outputs whose size depends on the data get an output allocator, whose failure is an
error naming it rather than a crash inside TensorRT."""

from __future__ import annotations

import pytest

from app import EngineBuildError
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import VERSIONS, config, make_nonzero_model, runtime_for


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
