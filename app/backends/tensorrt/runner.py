"""Run a serialized TensorRT engine on host arrays, for the accuracy gate
(:meth:`TensorRTRuntime.open_runner <app.backends.tensorrt.runtime.TensorRTRuntime.open_runner>`).

On the configured GPU (``cuda_device``, made current before deserializing, and every buffer
allocated there) and, for a DLA engine, on its core (``Runtime.DLA_core`` before deserializing;
its default, -1, is unspecified: TensorRT v10.3.0 include/NvInferRuntime.h:1390-1401). The
process logger registers TensorRT's plugins first (:mod:`app.backends.tensorrt.logsink`), so an
engine holding a plugin (ALIKED's DeformConv on 10.x) deserializes in a process that never
parsed. Per sample: ``set_input_shape`` and ``set_tensor_address`` for each input, a buffer of
the context's shape for each output, an output allocator for outputs whose size depends on the
data (:mod:`app.backends.tensorrt.outputs`), ``execute_async_v3``, synchronize, download. Host-
located tensors get host memory. Only names that exist in the bindings of TensorRT 8.6 and 10.x
are used (tests/backends/tensorrt/test_runner.py checks them against the real bindings'
identifiers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from app.cache.fsread import open_binary
from app.errors import EngineBuildError


class DeviceBuffers(Protocol):
    """Device memory as the runner needs it (what DeviceMemory provides)."""

    def alloc(self, nbytes: int) -> int: ...

    def upload(self, ptr: int, array: Any) -> None: ...

    def download(self, array: Any, ptr: int) -> None: ...

    def stream(self) -> Any: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class TrtRunner:
    """One engine, its execution context and its buffers; ``close`` frees them all."""

    def __init__(self, engine: Path | bytes, model_name: str = "", *, trt: Any = None,
                 memory: DeviceBuffers | None = None, cudart: Any = None, cuda_device: int = 0,
                 dla_core: int | None = None) -> None:
        from app.backends.tensorrt.api import TrtApi
        from app.backends.tensorrt.callbacks import CallbackErrors
        from app.backends.tensorrt.loader import import_tensorrt
        from app.backends.tensorrt.logsink import logging_to
        from app.backends.tensorrt.outputs import make_output_allocator
        from app.host import select_device

        self.api = TrtApi(trt if trt is not None else
                         import_tensorrt("the accuracy check of a TensorRT engine"))
        self.model_name = model_name
        if isinstance(engine, Path):  # a FIFO or a device there: UnsafeFileError, not a hang
            with open_binary(engine, follow_links=True) as handle:
                engine = handle.read()
        blob = engine
        if memory is None or cudart is not None:
            cudart = cudart if cudart is not None else _cudart()
            select_device(cuda_device, cudart)  # the engine and its buffers on one GPU
        self._memory = memory if memory is not None else _device_memory(cudart, cuda_device)
        self._guard = CallbackErrors()
        # The process logger sends to this runner until close: a failed sample quotes TensorRT.
        self._logging = logging_to(self.api.trt, lambda severity, message: None, self._guard)
        self._sink = self._logging.__enter__()
        runtime = self.api.trt.Runtime(self._sink.logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        self.engine = runtime.deserialize_cuda_engine(blob)
        del runtime  # no runtime outlives its use: nothing of it is needed once deserialized
        if self.engine is None:
            detail = "; ".join(self._sink.errors)[:300] or "no reason given"
            self._logging.__exit__(None, None, None)
            raise EngineBuildError(f"{model_name}: TensorRT cannot deserialize the engine for the "
                                   f"accuracy check: {detail}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.api.is_input(self.engine, n)]
        self.outputs = [n for n in names if n not in self.inputs]
        self._allocator = make_output_allocator(self.api.trt, self._memory, self._guard)
        self._buffers: dict[str, tuple[int, int]] = {}
        self._host: dict[str, Any] = {}

    def _dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(self.api.dtype_name(self.engine.get_tensor_dtype(name)))

    def _on_host(self, name: str) -> bool:
        from app.backends.tensorrt.outputs import on_host

        return on_host(self.api.trt, self.engine, name, name in self.inputs)

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer for ``name`` of at least ``nbytes``, reused across samples."""
        held = self._buffers.get(name)
        if held is None or held[1] < nbytes:
            held = (self._memory.alloc(nbytes), nbytes)
            self._buffers[name] = held
        return held[0]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise EngineBuildError(f"{self.model_name}: no value for engine inputs {missing}")
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            if not self.context.set_input_shape(name, tuple(array.shape)):
                raise EngineBuildError(f"{self.model_name}: the engine refuses shape "
                                       f"{list(array.shape)} for input {name!r}")
            if self._on_host(name):
                self._host[name] = array  # kept alive until the next sample
                ptr = int(array.ctypes.data)
            else:
                ptr = self._buffer(name, array.nbytes)
                self._memory.upload(ptr, array)
            self.context.set_tensor_address(name, ptr)
        results: dict[str, Any] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # its size depends on the data
                self.context.set_output_allocator(name, self._allocator)
                continue
            results[name] = np.empty(shape, dtype=self._dtype(name))
            on_host = self._on_host(name)
            ptr = int(results[name].ctypes.data) if on_host else self._buffer(
                name, results[name].nbytes)
            self.context.set_tensor_address(name, ptr)
        if not self.context.execute_async_v3(self._memory.stream()):
            self._guard.raise_first(self.model_name)
            detail = "; ".join(self._sink.errors[-3:])[:300]
            raise EngineBuildError(f"{self.model_name}: the engine failed to run a sample"
                                   + (f": {detail}" if detail else ""))
        self._memory.synchronize()
        self._guard.raise_first(self.model_name)
        for name in self.outputs:
            if name not in results:
                results[name] = self._allocated(name)
            elif not self._on_host(name):
                self._memory.download(results[name], self._buffers[name][0])
        return results

    def _allocated(self, name: str) -> Any:
        """A data-dependent output: the shape TensorRT notified, read from the buffer it got."""
        import numpy as np

        shape = self._allocator.shapes.get(name)
        held = self._allocator.buffers.get(name)
        if shape is None or held is None:
            raise EngineBuildError(f"{self.model_name}: TensorRT did not report the shape of "
                                   f"data-dependent output {name!r}")
        array = np.empty(shape, dtype=self._dtype(name))
        if array.nbytes > held[1]:
            raise EngineBuildError(f"{self.model_name}: output {name!r} of shape {list(shape)} "
                                   f"does not fit the {held[1]} bytes TensorRT asked for")
        if array.nbytes:
            self._memory.download(array, held[0])
        return array

    def close(self) -> None:
        self.context = self.engine = None  # before the buffers they point into
        self._memory.close()
        self._buffers.clear()
        self._host.clear()
        self._logging.__exit__(None, None, None)


def _cudart() -> Any:
    from app.backends.tensorrt.device_memory import cudart

    return cudart()


def _device_memory(cudart: Any, device: int) -> DeviceBuffers:
    from app.backends.tensorrt.device_memory import DeviceMemory

    return DeviceMemory(cudart, device)
