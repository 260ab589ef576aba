"""The machine the job runs on: here the GPU, through cuda-python's driver API only (no CUDA
runtime or TensorRT loaded), every call's status checked; :mod:`.probe` the JetPack release and
what is installed, :mod:`.identity` the exact SKU an engine is tied to."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from app.errors import HostProbeError


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver reports it; ``sm_count`` and ``total_memory`` (bytes) tell
    apart devices of one compute capability and name (the Jetson Orin modules)."""

    index: int
    name: str
    major: int
    minor: int
    device_count: int
    driver_version: int
    sm_count: int = 0
    total_memory: int = 0

    @property
    def sm(self) -> int:
        return self.major * 10 + self.minor


def import_cuda(part: str, legacy: str) -> ModuleType | None:
    """``cuda.bindings.<part>`` (cuda-python >= 12.6.1), else ``cuda.<legacy>``, else None."""
    for name in (f"cuda.bindings.{part}", f"cuda.{legacy}"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _driver_module() -> ModuleType:
    module = import_cuda("driver", "cuda")
    if module is None:
        raise HostProbeError(
            "cuda-python is not installed, so the GPU cannot be probed",
            hint="install cuda-python 12.x (pip install 'engine-init[cuda]'), "
            "or use backend: onnxruntime",
        )
    return module


def _check(driver: ModuleType, result: Any, what: str) -> Any:
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != driver.CUresult.CUDA_SUCCESS:
        name = getattr(status, "name", str(status))
        raise HostProbeError(
            f"CUDA driver call {what} failed: {name}",
            hint="check that the container runs with the NVIDIA runtime (compose: "
            "runtime: nvidia) and that the device exists",
        )
    return values[0] if len(values) == 1 else tuple(values)


def probe_gpu(device_index: int = 0, driver: ModuleType | None = None) -> GpuInfo:
    """Device ``device_index`` as the driver reports it; HostProbeError if there is none."""
    drv = driver or _driver_module()
    try:
        initialised = drv.cuInit(0)
    except (RuntimeError, OSError) as exc:
        # cuda-python loads libcuda.so.1 on the first call and raises (not a status) when the
        # container has none: started without the NVIDIA runtime, or on a host without a GPU.
        raise HostProbeError(
            f"the CUDA driver library cannot be loaded ({exc})",
            hint="run the container with the NVIDIA runtime (--runtime nvidia, compose: "
            "runtime: nvidia; --gpus all on x86), or use backend: onnxruntime",
        ) from exc
    _check(drv, initialised, "cuInit")
    count = _check(drv, drv.cuDeviceGetCount(), "cuDeviceGetCount")
    if count <= device_index:
        raise HostProbeError(
            f"cuda_device {device_index} does not exist: the driver sees {count} GPU(s)",
            hint=f"set cuda_device to 0..{count - 1}" if count else "no GPU is visible",
        )
    version = _check(drv, drv.cuDriverGetVersion(), "cuDriverGetVersion")
    dev = _check(drv, drv.cuDeviceGet(device_index), "cuDeviceGet")
    attr = drv.CUdevice_attribute
    major = _check(drv, drv.cuDeviceGetAttribute(
        attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute(major)")
    minor = _check(drv, drv.cuDeviceGetAttribute(
        attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute(minor)")
    sms = _check(drv, drv.cuDeviceGetAttribute(
        attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev), "cuDeviceGetAttribute(sm_count)")
    memory = _check(drv, drv.cuDeviceTotalMem(dev), "cuDeviceTotalMem")
    raw = _check(drv, drv.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return GpuInfo(device_index, name, int(major), int(minor), int(count), int(version),
                   sm_count=int(sms), total_memory=int(memory))


def _runtime_module(index: int) -> Any:
    rt = import_cuda("runtime", "cudart")
    if rt is None:
        raise HostProbeError(f"cuda-python's runtime API is needed to select cuda_device {index}",
                             hint="install cuda-python 12.x (pip install 'engine-init[cuda]')")
    return rt


def select_device(index: int, runtime: Any = None) -> None:
    """Make GPU ``index`` current for the calling thread: the current device is per thread (a
    new one starts on 0), and TensorRT and ``cudaMalloc`` use it."""
    rt = runtime or _runtime_module(index)
    result = rt.cudaSetDevice(index)
    status = result[0] if isinstance(result, tuple) else result
    if status != rt.cudaError_t.cudaSuccess:
        raise HostProbeError(f"cudaSetDevice({index}) failed: {getattr(status, 'name', status)}",
                             hint="set cuda_device to a GPU this container can see")


def device_free_memory(index: int, runtime: Any = None) -> int | None:
    """Free bytes on discrete GPU ``index``; None on an integrated GPU (a Jetson), whose memory
    is the host's. Creates the primary context, as the build that follows would anyway."""
    rt = runtime or _runtime_module(index)
    select_device(index, rt)
    ok = rt.cudaError_t.cudaSuccess
    status, integrated = rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrIntegrated, index)
    if status == ok and integrated:
        return None
    status, free, _total = rt.cudaMemGetInfo() if status == ok else (status, 0, 0)
    if status != ok:
        raise HostProbeError(f"cannot read cuda_device {index}'s free memory: "
                             f"{getattr(status, 'name', status)}",
                             hint="check that the container runs with the NVIDIA runtime")
    return int(free)
