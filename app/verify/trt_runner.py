"""Run a serialized TensorRT engine on host arrays, for the accuracy gate.

Deserialize (``Runtime.deserialize_cuda_engine``), then per sample: ``set_input_shape`` and
``set_tensor_address`` for each input (uploaded to device buffers), the output shapes from the
context, ``execute_async_v3`` on a stream, synchronize, download. Only names that exist in the
bindings of TensorRT 8.6 and 10.x are used (tests/verify/test_trt_runner.py checks them against
the real bindings' identifiers). ``trt`` and ``memory`` are injectable; by default the
``tensorrt`` module and cuda-python's :class:`~app.backends.tensorrt.device_memory.DeviceMemory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from app.errors import BackendUnavailableError, EngineBuildError

__all__ = ["DeviceBuffers", "TrtRunner"]


class DeviceBuffers(Protocol):
    """Device memory as the runner needs it (what DeviceMemory provides)."""

    def alloc(self, nbytes: int) -> int: ...

    def upload(self, ptr: int, array: Any) -> None: ...

    def download(self, array: Any, ptr: int) -> None: ...

    def stream(self) -> Any: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class TrtRunner:
    """One engine, its execution context and its buffers; ``close`` frees them."""

    def __init__(self, engine: Path | bytes, model_name: str = "", *, trt: Any = None,
                 memory: DeviceBuffers | None = None) -> None:
        from app.backends.tensorrt.api import TrtApi
        from app.backends.tensorrt.callbacks import CallbackErrors

        self.api = TrtApi(trt if trt is not None else _import_tensorrt())
        self.model_name = model_name
        blob = Path(engine).read_bytes() if isinstance(engine, Path) else engine
        # Only the errors are wanted (kept by the logger for the message below).
        self._logger = self.api.make_logger(lambda severity, message: None, CallbackErrors())
        self._runtime = self.api.trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            detail = "; ".join(self._logger.errors)[:300] or "no reason given"
            raise EngineBuildError(f"{model_name}: TensorRT cannot deserialize the engine for the "
                                   f"accuracy check: {detail}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.api.is_input(self.engine, n)]
        self.outputs = [n for n in names if n not in self.inputs]
        self._memory = memory if memory is not None else _device_memory()
        self._buffers: dict[str, tuple[int, int]] = {}

    def _dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(self.api.dtype_name(self.engine.get_tensor_dtype(name)))

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
            ptr = self._buffer(name, array.nbytes)
            self._memory.upload(ptr, array)
            self.context.set_tensor_address(name, ptr)
        results: dict[str, Any] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineBuildError(f"{self.model_name}: output {name!r} has a data-dependent "
                                       f"shape {list(shape)}, which the accuracy check cannot run")
            results[name] = np.empty(shape, dtype=self._dtype(name))
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self._memory.stream()):
            raise EngineBuildError(f"{self.model_name}: the engine failed to run a sample")
        self._memory.synchronize()
        for name, array in results.items():
            self._memory.download(array, self._buffers[name][0])
        return results

    def close(self) -> None:
        self._memory.close()
        self._buffers.clear()
        self.context = self.engine = None


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError("the accuracy check of a TensorRT engine needs TensorRT",
                                      hint="run it where the engine was built") from exc
    return tensorrt


def _device_memory() -> DeviceBuffers:
    from app.backends.tensorrt.device_memory import DeviceMemory

    return DeviceMemory()
