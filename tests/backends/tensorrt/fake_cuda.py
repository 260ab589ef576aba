"""A stand-in for ``cuda.bindings.runtime`` (no GPU here): tuple-returning calls like the real
module's, a current device per thread (0 until ``cudaSetDevice``, as CUDA's), and "device"
memory that holds what was copied in, so that the TensorRT stand-in reads calibration batches
and checks buffer sizes the way the GPU would see them."""

from __future__ import annotations

import ctypes
import enum
import threading


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaDeviceAttr(enum.IntEnum):
    cudaDevAttrIntegrated = 18


class FakeCudart:
    """``devices`` GPUs; ``allocated`` maps live pointers to sizes, ``device_of`` to devices.
    ``integrated``: a Jetson's GPU (its memory is the host's); else ``free_bytes`` free on
    each device less what is allocated on it."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaDeviceAttr = cudaDeviceAttr

    def __init__(self, devices: int = 1, integrated: bool = True,
                 free_bytes: int = 40 << 30) -> None:
        self.devices = devices
        self.integrated = integrated
        self.free_bytes = free_bytes
        self.allocated: dict[int, int] = {}
        self.device_of: dict[int, int] = {}
        self.ever_allocated: list[int] = []
        self.copies: list[tuple[int, int]] = []
        self.freed: list[int] = []
        self._memory: dict[int, bytearray] = {}
        self._local = threading.local()
        self._next = 0x1000

    # -- what tests and the TensorRT stand-in read --------------------------------------------
    def current(self) -> int:
        return getattr(self._local, "device", 0)

    def read(self, ptr: int, nbytes: int) -> tuple[bytes, int]:
        """``nbytes`` from a buffer (zero-padded past its end) and the buffer's real size."""
        data = bytes(self._memory.get(ptr, b""))
        return (data + bytes(max(0, nbytes - len(data))))[:nbytes], len(data)

    def size_of(self, ptr: int) -> int:
        return self.allocated.get(ptr, 0)

    # -- the cuda-python runtime API ----------------------------------------------------------
    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:
        if not 0 <= device < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        self._local.device = device
        return (cudaError_t.cudaSuccess,)

    def cudaDeviceGetAttribute(self, attr: cudaDeviceAttr, device: int) -> tuple[cudaError_t, int]:
        if attr != cudaDeviceAttr.cudaDevAttrIntegrated or not 0 <= device < self.devices:
            return (cudaError_t.cudaErrorInvalidValue, 0)
        return (cudaError_t.cudaSuccess, int(self.integrated))

    def cudaMemGetInfo(self) -> tuple[cudaError_t, int, int]:
        used = sum(n for p, n in self.allocated.items() if self.device_of[p] == self.current())
        return (cudaError_t.cudaSuccess, self.free_bytes - used, 80 << 30)

    def cudaGetDevice(self) -> tuple[cudaError_t, int]:
        return (cudaError_t.cudaSuccess, self.current())

    def cudaMalloc(self, n: int) -> tuple[cudaError_t, int]:
        ptr, self._next = self._next, self._next + n + 256
        self.allocated[ptr] = n
        self.device_of[ptr] = self.current()
        self.ever_allocated.append(ptr)
        self._memory[ptr] = bytearray(n)
        return (cudaError_t.cudaSuccess, ptr)

    def cudaMemcpy(self, dst: int, src: int, n: int, kind: int) -> tuple[cudaError_t]:
        self.copies.append((int(kind), n))
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            if self.allocated.get(dst, -1) < n:
                return (cudaError_t.cudaErrorInvalidValue,)
            self._memory[dst][:n] = ctypes.string_at(src, n)
        else:
            if self.allocated.get(src, -1) < n:
                return (cudaError_t.cudaErrorInvalidValue,)
            ctypes.memmove(dst, bytes(self._memory[src][:n]), n)
        return (cudaError_t.cudaSuccess,)

    def cudaFree(self, ptr: int) -> tuple[cudaError_t]:
        self.freed.append(ptr)
        self.allocated.pop(ptr, None)
        self._memory.pop(ptr, None)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[cudaError_t, int]:
        return (cudaError_t.cudaSuccess, 7)

    def cudaStreamSynchronize(self, stream: int) -> tuple[cudaError_t]:
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream: int) -> tuple[cudaError_t]:
        return (cudaError_t.cudaSuccess,)
