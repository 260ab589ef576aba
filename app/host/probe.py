"""HostCapabilities for the running machine: GPU, JetPack and TensorRT facts together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import ConfigError, HostProbeError
from app.host.cuda import GpuInfo, probe_gpu
from app.host.jetson import RELEASE_FILE, JetsonRelease, detect_release
from app.host.tensorrt import TensorRTInstall, find_tensorrt
from app.values import HostCapabilities


@dataclass(frozen=True)
class HostReport:
    """The capabilities plus what was read and any warnings worth an event."""

    capabilities: HostCapabilities
    gpu: GpuInfo | None
    release: JetsonRelease
    tensorrt: TensorRTInstall
    warnings: list[str] = field(default_factory=list)
    gpu_error: str = ""


def probe_host(
    *,
    need_gpu: bool,
    cuda_device: int = 0,
    jetpack_override: str | None = None,
    env: Mapping[str, str] | None = None,
    release_file: Path = RELEASE_FILE,
) -> HostReport:
    """Probe the host. Without ``need_gpu`` a missing GPU gives ``sm=0`` instead of an error."""
    warnings: list[str] = []
    gpu: GpuInfo | None = None
    gpu_error = ""
    try:
        gpu = probe_gpu(cuda_device)
    except HostProbeError as exc:
        if need_gpu:
            raise
        gpu_error = exc.message
    try:
        release = detect_release(env, release_file)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="set L4T_VERSION (e.g. 36.4.3) or the jetpack key") from None
    jetpack = release.jetpack
    if jetpack_override:
        jetpack = jetpack_override
    elif not release.known:
        warnings.append(
            f"L4T {release.l4t} is not in engine-init's table; engines are named "
            f"jp{release.jetpack}. Set the jetpack key if you know the JetPack release"
        )
    trt = find_tensorrt()
    for conflict in trt.conflicts():
        warnings.append(f"TensorRT {trt.version} ({trt.module_path}) but also {conflict} on the "
                        "loader path: engines only load with the exact version they were built by")
    caps = HostCapabilities(
        sm=gpu.sm if gpu else 0, jetpack=jetpack, trt=trt.major_minor, trt_full=trt.version,
        device_name=gpu.name if gpu else "", l4t=release.l4t, cuda_device=cuda_device,
    )
    return HostReport(caps, gpu, release, trt, warnings, gpu_error)
