"""The TensorRT release the job will load, found without importing TensorRT.

Importing ``tensorrt`` loads libnvinfer (hundreds of MB, seconds on a Jetson), and a warm boot
needs only the version string. It is read from the ``tensorrt`` package that ``import tensorrt``
would load (its ``__version__`` line), and the ``libnvinfer.so.X.Y.Z`` files on the loader path
are listed to warn when two installs disagree, the classic cause of "magicTag" errors.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from app.host.packages import declared_version

_LIB_RE = re.compile(r"libnvinfer\.so\.(\d+\.\d+\.\d+)$")
_LIB_DIRS = ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/tensorrt/lib",
             "/usr/lib64", "/usr/local/lib")


@dataclass(frozen=True)
class TensorRTInstall:
    """``version`` is the full version of the Python package ('' if absent)."""

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
        """Library versions on the loader path whose major.minor differs from the package's."""
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
    """Where the ``tensorrt`` package that ``import tensorrt`` would load lies; None: TensorRT
    for Python is not installed. Found, not imported. The one answer to "is TensorRT there"."""
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
