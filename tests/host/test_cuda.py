"""The cuda-python probe: a stand-in driver module checks the status handling everywhere;
the real-GPU test runs where cuda-python and a GPU exist (it ran on an H200, see README)."""

from __future__ import annotations

import enum
import os
from types import SimpleNamespace

import pytest

from app.errors import HostProbeError
from app.host.cuda import probe_gpu
from app.host.probe import probe_host


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_DEVICE = 101


class Attr(enum.IntEnum):
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16


#: What an AGX Orin 64 GB reports: 16 SMs, the shared RAM less the carve-outs.
ORIN_AGX_64 = {"cc": (8, 7), "sms": 16, "memory": 65_890_271_232}


def fake_driver(count=1, cc=(8, 7), name=b"Orin (nvgpu)", fail=None, sms=16,
                memory=ORIN_AGX_64["memory"]):
    """Stand-in for cuda.bindings.driver: tuple-returning calls, as the real module's."""
    ok = CUresult.CUDA_SUCCESS

    def status(call):
        return CUresult.CUDA_ERROR_NO_DEVICE if fail == call else ok

    attributes = {Attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: cc[0],
                  Attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: cc[1],
                  Attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: sms}

    return SimpleNamespace(
        CUresult=CUresult, CUdevice_attribute=Attr,
        cuInit=lambda flags: (status("cuInit"),),
        cuDeviceGetCount=lambda: (status("cuDeviceGetCount"), count),
        cuDriverGetVersion=lambda: (ok, 12060),
        cuDeviceGet=lambda i: (status("cuDeviceGet"), i),
        cuDeviceGetAttribute=lambda attr, dev: (status("cuDeviceGetAttribute"), attributes[attr]),
        cuDeviceTotalMem=lambda dev: (status("cuDeviceTotalMem"), memory),
        cuDeviceGetName=lambda n, dev: (status("cuDeviceGetName"), name + b"\0" * (n - len(name))),
    )


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


def _real_gpu_available() -> bool:
    try:
        probe_gpu(int(os.environ.get("TEST_CUDA_DEVICE", "0")))
    except HostProbeError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_gpu_probe():
    """The probe against the real driver, cross-checked with nvidia-smi and with direct
    cuDeviceGetAttribute / cuDeviceTotalMem calls made here, outside the probe."""
    import shutil
    import subprocess

    from app.host.cuda import import_cuda

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
