"""The cuda-python probe: a stand-in driver module checks the status handling everywhere;
the real-GPU test runs where cuda-python and a GPU exist (it ran on an H200: docs/tensorrt.md)."""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest

from app.errors import HostProbeError
from app.host import probe_gpu
from app.host.probe import probe_host
from tests.helpers import ORIN_AGX_64, fake_driver, real_gpu_available


def test_reads_name_and_compute_capability():
    info = probe_gpu(0, fake_driver())
    assert (info.sm, info.name, info.device_count, info.driver_version) == (87, "Orin (nvgpu)", 1, 12060)
    assert (info.sm_count, info.total_memory) == (16, ORIN_AGX_64["memory"])
    nx = probe_gpu(0, fake_driver(sms=8, memory=16_464_859_136))
    assert (nx.sm, nx.sm_count, nx.total_memory) == (87, 8, 16_464_859_136)


@pytest.mark.parametrize("call", ["cuInit", "cuDeviceGetCount", "cuDeviceGet",
                                  "cuDeviceGetAttribute", "cuDeviceTotalMem", "cuDeviceGetName"])
def test_every_status_is_checked(call):
    with pytest.raises(HostProbeError, match=call):
        probe_gpu(0, fake_driver(fail=call))


def test_a_driver_library_that_cannot_load_is_a_probe_error():
    """cuda-python raises, rather than returning a status, when libcuda.so.1 is absent (seen
    with cuda-python 12.6.2.post1 in a container started without the NVIDIA runtime)."""
    driver = fake_driver()

    def no_libcuda(flags):
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    driver.cuInit = no_libcuda
    with pytest.raises(HostProbeError, match=r"CUDA driver library cannot be loaded.*libcuda"):
        probe_gpu(0, driver)


def test_without_libcuda_the_cpu_backend_still_runs(monkeypatch):
    """The probe is optional for backend onnxruntime: a driver that cannot load is no GPU."""
    driver = fake_driver()
    driver.cuInit = lambda flags: (_ for _ in ()).throw(RuntimeError("Failed to dlopen libcuda.so.1"))
    monkeypatch.setattr("app.host._driver_module", lambda: driver)
    report = probe_host(need_gpu=False)
    assert report.gpu is None and "libcuda" in report.gpu_error


def test_device_index_out_of_range_and_no_gpu():
    with pytest.raises(HostProbeError, match="cuda_device 2 does not exist"):
        probe_gpu(2, fake_driver(count=2))
    with pytest.raises(HostProbeError, match="0 GPU"):
        probe_gpu(0, fake_driver(count=0))


def test_probe_host_without_gpu(tmp_path, monkeypatch):
    import app.host.probe as probe

    def no_gpu(index):
        raise HostProbeError("no driver")

    monkeypatch.setattr(probe, "probe_gpu", no_gpu)
    report = probe_host(need_gpu=False, env={}, release_file=tmp_path / "none")
    assert (report.capabilities.sm, report.capabilities.jetpack) == (0, "none")
    with pytest.raises(HostProbeError):
        probe_host(need_gpu=True, env={}, release_file=tmp_path / "none")


def test_probe_host_on_a_stand_in_orin(tmp_path, monkeypatch):
    import app.host.probe as probe

    monkeypatch.setattr(probe, "probe_gpu", lambda i: probe_gpu(i, fake_driver()))
    report = probe_host(need_gpu=True, env={"L4T_VERSION": "36.4.3"}, release_file=tmp_path / "x")
    assert (report.capabilities.sm, report.capabilities.jetpack, report.capabilities.l4t) == (
        87, "6.2", "36.4.3")
    unknown = probe_host(need_gpu=True, env={"L4T_VERSION": "36.9.1"}, release_file=tmp_path / "x")
    assert unknown.capabilities.jetpack == "l4t36.9.1" and "not in" in unknown.warnings[0]
    override = probe_host(need_gpu=True, env={"L4T_VERSION": "36.9.1"}, jetpack_override="6.3",
                          release_file=tmp_path / "x")
    assert override.capabilities.jetpack == "6.3" and not override.warnings


@pytest.mark.gpu
@pytest.mark.skipif(not real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_gpu_probe():
    """The probe against the real driver, cross-checked with nvidia-smi and with direct
    cuDeviceGetAttribute / cuDeviceTotalMem calls made here, outside the probe."""
    import shutil
    import subprocess

    from app.host import import_cuda

    info = probe_gpu(0)
    print(f"GPU 0: {info.name!r} sm{info.sm} {info.sm_count} SMs {info.total_memory} bytes "
          f"driver {info.driver_version} of {info.device_count}")
    assert info.sm >= 50 and info.name
    assert info.sm_count > 0 and info.total_memory > 0
    drv = import_cuda("driver", "cuda")
    assert drv is not None
    err, dev = drv.cuDeviceGet(0)
    assert err == drv.CUresult.CUDA_SUCCESS
    err, sms = drv.cuDeviceGetAttribute(
        drv.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)
    assert err == drv.CUresult.CUDA_SUCCESS and sms == info.sm_count
    err, memory = drv.cuDeviceTotalMem(dev)
    assert err == drv.CUresult.CUDA_SUCCESS and memory == info.total_memory
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is absent: the driver figures were checked, not the tool's")
    out = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=name,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    print(f"nvidia-smi: {out}")
    smi_name, smi_mib = (part.strip() for part in out.rsplit(",", 1))
    assert smi_name == info.name
    # nvidia-smi counts the memory the driver keeps for itself (615 MiB of an H200's 143771
    # MiB); cuDeviceTotalMem what CUDA can allocate from. The driver's share stays under 1 GiB.
    reserved = int(smi_mib) * (1 << 20) - info.total_memory
    assert 0 <= reserved < 1 << 30, reserved


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidDevice = 101
    cudaErrorNoDevice = 100


class cudaDeviceAttr(enum.IntEnum):
    cudaDevAttrIntegrated = 18


def fake_runtime(devices=2, integrated=False, free=(7 << 30, 3 << 30), fail_info=False):
    """Stand-in for cuda.bindings.runtime: a current device per thread, as CUDA's; ``free``:
    each device's free bytes, which cudaMemGetInfo reports for the current device."""
    import threading

    local = threading.local()

    def set_device(index):
        if not 0 <= index < devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        local.device = index
        return (cudaError_t.cudaSuccess,)

    def mem_info():
        if fail_info:
            return (cudaError_t.cudaErrorNoDevice, 0, 0)
        return (cudaError_t.cudaSuccess, free[getattr(local, "device", 0)], 80 << 30)

    def attribute(attr, index):
        assert attr == cudaDeviceAttr.cudaDevAttrIntegrated
        return (cudaError_t.cudaSuccess, int(integrated))

    return SimpleNamespace(cudaError_t=cudaError_t, cudaDeviceAttr=cudaDeviceAttr,
                           cudaSetDevice=set_device, cudaMemGetInfo=mem_info,
                           cudaDeviceGetAttribute=attribute,
                           current=lambda: getattr(local, "device", 0))


def test_select_device_makes_the_device_current_for_the_calling_thread_only():
    import threading

    from app.host import select_device

    runtime = fake_runtime()
    seen = []
    worker = threading.Thread(target=lambda: (select_device(1, runtime), seen.append(runtime.current())))
    worker.start()
    worker.join()
    assert seen == [1] and runtime.current() == 0


def test_select_device_checks_the_status_and_needs_cuda_python(monkeypatch):
    import app.host as cuda

    with pytest.raises(HostProbeError, match=r"cudaSetDevice\(2\) failed: cudaErrorInvalidDevice"):
        cuda.select_device(2, fake_runtime(devices=2))
    monkeypatch.setattr(cuda, "import_cuda", lambda part, legacy: None)
    with pytest.raises(HostProbeError, match="cuda-python's runtime API"):
        cuda.select_device(0)


@pytest.mark.gpu
@pytest.mark.skipif(not real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_select_device_in_a_fresh_thread():
    """On a real machine: a new thread allocates on device 0 until it selects another; with
    select_device, the allocation lands on the last GPU (device 0 on a one-GPU machine)."""
    import threading

    from app.host import import_cuda, select_device

    rt = import_cuda("runtime", "cudart")
    last = probe_gpu(0).device_count - 1
    found: dict[str, int] = {}

    def allocate(key: str, select: bool) -> None:
        if select:
            select_device(last)
        err, ptr = rt.cudaMalloc(1024)
        assert err == rt.cudaError_t.cudaSuccess
        err, attrs = rt.cudaPointerGetAttributes(ptr)
        found[key] = attrs.device
        rt.cudaFree(ptr)

    for key, select in (("plain", False), ("selected", True)):
        thread = threading.Thread(target=allocate, args=(key, select))
        thread.start()
        thread.join()
    print(f"device of a fresh thread's buffer: {found['plain']}; after select_device({last}): "
          f"{found['selected']}")
    assert found == {"plain": 0, "selected": last}


def test_the_probed_device_index_reaches_the_capabilities(tmp_path, monkeypatch):
    import app.host.probe as probe

    monkeypatch.setattr(probe, "probe_gpu", lambda i: probe_gpu(i, fake_driver(count=2)))
    report = probe_host(need_gpu=True, cuda_device=1, env={"L4T_VERSION": "36.4.3"},
                        release_file=tmp_path / "x")
    assert report.capabilities.cuda_device == 1


def test_device_free_memory_of_a_discrete_gpu_is_the_selected_devices():
    from app.host import device_free_memory

    assert device_free_memory(1, fake_runtime()) == 3 << 30
    assert device_free_memory(0, fake_runtime()) == 7 << 30


def test_an_integrated_gpu_has_no_device_free_memory_of_its_own():
    """On a Jetson the GPU's memory is the host's: the governor uses MemAvailable there."""
    from app.host import device_free_memory

    assert device_free_memory(0, fake_runtime(integrated=True)) is None


def test_device_free_memory_checks_every_status():
    from app.host import device_free_memory

    with pytest.raises(HostProbeError, match=r"cannot read cuda_device 0's free memory: "
                                             "cudaErrorNoDevice"):
        device_free_memory(0, fake_runtime(fail_info=True))
    with pytest.raises(HostProbeError, match=r"cudaSetDevice\(5\) failed"):
        device_free_memory(5, fake_runtime())


@pytest.mark.gpu
@pytest.mark.skipif(not real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_device_free_memory():
    """On a real discrete GPU: free bytes, positive and under the device's total; None on a
    Jetson's integrated GPU."""
    from app.host import device_free_memory

    info = probe_gpu(0)
    free = device_free_memory(0)
    print(f"{info.name}: {free} bytes free of {info.total_memory}")
    if "Orin" in info.name or "Xavier" in info.name:
        assert free is None
    else:
        assert free is not None and 0 < free <= info.total_memory
