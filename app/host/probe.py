"""What the host has: the JetPack release, TensorRT and the packages, and the
:class:`~app.values.HostCapabilities` they make with the GPU. Nothing here imports TensorRT
(libnvinfer: hundreds of MB, seconds on a Jetson): versions come from literal ``__version__``
lines, and ``libnvinfer.so.X.Y.Z`` files on the loader path that disagree are warned of (the
classic cause of "magicTag" errors). An L4T release not in NVIDIA's table stays ``l4t<version>``,
never a guessed JetPack."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.cache.fsread import UnsafeFileError, read_small
from app.errors import ConfigError, HostProbeError
from app.host import GpuInfo, probe_gpu
from app.values import NO_JETPACK, HostCapabilities

RELEASE_FILE = Path("/etc/nv_tegra_release")

#: L4T release -> JetPack release, as published by NVIDIA.
L4T_TO_JETPACK: dict[str, str] = {
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "35.6.2": "5.1.5",
    "36.2.0": "6.0",  # developer preview
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.2": "6.1.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "36.4.7": "6.2.1",
    "38.2.0": "7.0",
    "38.2.1": "7.0",
    "38.2.2": "7.0",
}

_LINE_RE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>\d+(?:\.\d+)?)\b")
_VERSION_RE = re.compile(r"R?(?P<v>\d+\.\d+(?:\.\d+)?)")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["'](\d+(?:\.\d+){1,3})["']""", re.M)
_LIB_RE = re.compile(r"libnvinfer\.so\.(\d+\.\d+\.\d+)$")
_LIB_DIRS = ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/tensorrt/lib",
             "/usr/lib64", "/usr/local/lib")


@dataclass(frozen=True)
class JetsonRelease:
    """``l4t`` is ``""`` off-Jetson; ``known``: the table had the release."""

    l4t: str
    jetpack: str
    known: bool
    source: str


def _normalise(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def parse_nv_tegra_release(text: str) -> str | None:
    """The L4T version ("36.4.3") from the file's first line, or None."""
    first = text.splitlines()[0] if text else ""
    match = _LINE_RE.match(first.strip())
    if match is None:
        return None
    return _normalise(f"{match['major']}.{match['rev']}")


def jetpack_for(l4t: str) -> tuple[str, bool]:
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t], True
    return f"l4t{l4t}", False


def _read_release(path: Path) -> str:
    """The release file's first 4 KiB; a FIFO is an error, not a hang. ``/dev/null`` (what a
    compose file mounts off-Jetson) reads as empty."""
    try:
        return read_small(path, 4096, follow_links=True, truncate=True).decode("utf-8", "replace")
    except UnsafeFileError:
        if os.stat(path).st_rdev == os.stat(os.devnull).st_rdev:
            return ""
        raise


def detect_release(
    env: Mapping[str, str] | None = None, release_file: Path = RELEASE_FILE
) -> JetsonRelease:
    """The L4T release from ``$L4T_VERSION`` or the release file; not a Jetson if neither."""
    env = os.environ if env is None else env
    raw_env = env.get("L4T_VERSION", "").strip()
    if raw_env:
        match = _VERSION_RE.fullmatch(raw_env)
        if match is None:
            raise ValueError(f"L4T_VERSION={raw_env!r} is not a version like 36.4.3")
        l4t = _normalise(match["v"])
        return JetsonRelease(l4t, *jetpack_for(l4t), source="L4T_VERSION")
    try:
        text = _read_release(release_file)
    except OSError:
        return JetsonRelease("", NO_JETPACK, True, source="none")
    if not text.strip():
        # An empty file is what a compose file mounts off-Jetson (/dev/null): not a Jetson.
        return JetsonRelease("", NO_JETPACK, True, source=str(release_file))
    parsed = parse_nv_tegra_release(text)
    if parsed is None:
        raise ValueError(f"{release_file} does not start with an L4T release line: "
                         f"{text.splitlines()[0][:80] if text else '(empty)'!r}")
    return JetsonRelease(parsed, *jetpack_for(parsed), source=str(release_file))


def declared_version(module: str, distributions: tuple[str, ...] = ()) -> str:
    """``module``'s literal ``__version__``, else its distribution's metadata (tens of ms to
    import), else ''."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        try:
            source = read_small(spec.origin, 4 << 20, follow_links=True, truncate=True)
            match = _VERSION_LINE.search(source.decode("utf-8", "replace"))
        except OSError:
            match = None
        if match:
            return match[1]
    from importlib import metadata

    for dist in distributions or (module,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


@dataclass(frozen=True)
class TensorRTInstall:
    version: str
    module_path: str
    libraries: dict[str, str] = field(default_factory=dict)

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2]) if self.version else "none"

    @property
    def present(self) -> bool:
        return bool(self.version)

    def conflicts(self) -> list[str]:
        return [f"{path} ({ver})" for path, ver in self.libraries.items()
                if self.version and ".".join(ver.split(".")[:2]) != self.major_minor]


def _library_versions() -> dict[str, str]:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(_LIB_DIRS)
    found: dict[str, str] = {}
    for folder in dict.fromkeys(dirs):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _LIB_RE.match(name)
            if match:
                found[str(Path(folder) / name)] = match[1]
    return found


def tensorrt_package() -> str | None:
    """Where ``import tensorrt`` would load it from (found, not imported); None: not installed.
    The one answer to "is TensorRT there"."""
    spec = importlib.util.find_spec("tensorrt")
    return spec.origin if spec is not None and spec.origin else None


def find_tensorrt() -> TensorRTInstall:
    origin = tensorrt_package()
    if origin is None:
        return TensorRTInstall("", "")  # no TensorRT for Python: stray libraries do not matter
    libs = _library_versions()
    version = declared_version("tensorrt", ("tensorrt", "tensorrt-cu12-bindings",
                                            "tensorrt-cu13-bindings", "tensorrt-bindings"))
    if not version and len(set(libs.values())) == 1:
        version = next(iter(libs.values()))
    return TensorRTInstall(version, origin, libs)


@dataclass(frozen=True)
class HostReport:
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
    """Without ``need_gpu`` a missing GPU gives ``sm=0`` instead of an error."""
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
    jetpack = jetpack_override or release.jetpack
    if not jetpack_override and not release.known:
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
