"""GPU buffers for calibration batches and warm-up inference, through cuda-python's runtime API.

Every call returns a status tuple, and every status is checked. Buffers are freed by
:meth:`DeviceMemory.close` (the runtime calls it in a ``finally``). Each allocation first makes
the configured GPU current: TensorRT may ask for a calibration batch from any thread, and a
thread starts on device 0.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from app.errors import BackendUnavailableError, EngineBuildError
from app.host import import_cuda, select_device


def cudart() -> ModuleType:
    module = import_cuda("runtime", "cudart")
    if module is None:
        raise BackendUnavailableError("cuda-python's runtime API is needed to build with TensorRT "
                                      "(device selection, INT8 calibration, warm-up)",
                                      hint="pip install cuda-python 12.x")
    return module


class DeviceMemory:
    """Buffers on GPU ``device``; ``runtime`` is cuda-python's runtime module (imported when None)."""

    def __init__(self, runtime: Any = None, device: int = 0) -> None:
        self.rt = runtime or cudart()
        self.device = device
        self._owned: list[int] = []
        self._stream: Any = None

    def _check(self, result: Any, what: str) -> Any:
        status, *values = result if isinstance(result, tuple) else (result,)
        if status != self.rt.cudaError_t.cudaSuccess:
            raise EngineBuildError(f"CUDA runtime call {what} failed: {getattr(status, 'name', status)}")
        return values[0] if len(values) == 1 else tuple(values)

    def alloc(self, nbytes: int) -> int:
        select_device(self.device, self.rt)
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._owned.append(ptr)
        return ptr

    def upload(self, ptr: int, array: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, kind), "cudaMemcpy")

    def download(self, array: Any, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpy(array.ctypes.data, ptr, array.nbytes, kind), "cudaMemcpy")

    def stream(self) -> Any:
        if self._stream is None:
            self._stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        return self._stream

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream()), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._owned:
            self.rt.cudaFree(ptr)
        self._owned.clear()
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None
