"""The exact hardware identity of a build target and the SKU key that names it
(docs/fleet.md#the-sku-key)."""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small
from app.cache.hashing import sha256_bytes
from app.host.probe import HostReport, declared_version

DEVICE_TREE = Path("/proc/device-tree")
_PROPERTY_MAX = 4096
# The module, not the carrier board: one module on two carriers is one SKU.
SKU_FIELDS = ("backend", "backend_version", "machine", "compute_capability", "sm_count",
              "memory_class_gib", "board_module", "jetpack", "l4t")
_MODULE_RE = re.compile(r"(?:^|[+,])(p\d{4}-\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TAG_MAX = 128
_RUNTIME_PREFIX = {"tensorrt": "trt", "onnxruntime": "ort"}


@dataclass(frozen=True)
class HardwareIdentity:
    """What an engine is tied to. Empty strings and zeros mean "not present on this host"."""

    backend: str
    backend_version: str  # TensorRT: the full version with the build number ("10.3.0.30")
    machine: str  # CPU architecture (platform.machine())
    compute_capability: str = ""  # "8.7"
    sm_count: int = 0
    total_memory: int = 0  # bytes, cuDeviceTotalMem
    device_name: str = ""
    board: tuple[str, ...] = ()  # /proc/device-tree/compatible, most specific first
    board_model: str = ""  # /proc/device-tree/model
    jetpack: str = "none"
    l4t: str = ""
    cuda_driver: int = 0  # cuDriverGetVersion, e.g. 12060

    @property
    def memory_class_gib(self) -> int:
        """Total GiB rounded up to a multiple of 4: a 64 GB AGX Orin reports ~61.4 GiB."""
        if self.total_memory <= 0:
            return 0
        gib = -(-self.total_memory // (1 << 30))
        return -(-gib // 4) * 4

    @property
    def board_module(self) -> str:
        """The module's part number (``p3701-0005``) from the compatible list, else ''."""
        for entry in self.board:
            match = _MODULE_RE.search(entry)
            if match:
                return match[1]
        return _UNSAFE.sub("-", self.board[0])[:32].strip("-") if self.board else ""

    def sku_key(self) -> str:
        if self.compute_capability:
            parts = ["sm" + self.compute_capability.replace(".", ""), f"{self.sm_count}sm",
                     f"{self.memory_class_gib}g"]
        else:
            parts = ["cpu", self.machine or "unknown"]
        if self.board_module:
            parts.append(self.board_module)
        prefix = _RUNTIME_PREFIX.get(self.backend, "rt")
        parts += [f"jp{self.jetpack}", f"{prefix}{self.backend_version or 'none'}", self.backend]
        key = "-".join(s for s in (_UNSAFE.sub("-", p).strip("-") for p in parts) if s)
        if len(key) > _TAG_MAX:
            key = f"{key[:_TAG_MAX - 9]}-{sha256_bytes(key)[:8]}"
        return key

    def diff(self, other: HardwareIdentity, *, everything: bool = False) -> list[str]:
        """``"field: mine != theirs"`` for each SKU field that differs (every field with
        ``everything``); empty when ``other`` is the same SKU."""
        names = [f.name for f in fields(self)] if everything else list(SKU_FIELDS)
        if everything:
            names += ["memory_class_gib", "board_module"]
        out = []
        for name in names:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                show = (lambda v: ",".join(v) or "none") if name == "board" else repr
                out.append(f"{name}: {show(mine)} != {show(theirs)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "board": list(self.board),
                "memory_class_gib": self.memory_class_gib, "sku_key": self.sku_key()}

    @classmethod
    def from_dict(cls, doc: object) -> HardwareIdentity:
        """The inverse of :meth:`as_dict`; ValueError naming the field when ``doc`` is not one."""
        if not isinstance(doc, dict):
            raise ValueError("the identity is not a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in doc:
                raise ValueError(f"the identity lacks {f.name!r}")
            value = doc[f.name]
            want = int if f.type == "int" else str
            if f.name == "board":
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise ValueError("the identity's 'board' is not a list of strings")
                value = tuple(value)
            elif not isinstance(value, want) or isinstance(value, bool):
                raise ValueError(f"the identity's {f.name!r} is not a{'n int' if want is int else ' string'}")
            values[f.name] = value
        return cls(**values)


def _read_property(path: Path) -> bytes | None:
    """A small regular file's bytes, else None. A link is refused as the last component only:
    /proc/device-tree itself links to /sys/firmware/devicetree/base on every Jetson."""
    try:
        return read_small(path, _PROPERTY_MAX)
    except OSError:
        return None


def _strings(raw: bytes) -> list[str]:
    text = raw.decode("utf-8", "replace")
    return [s for s in ("".join(c for c in part if c.isprintable()).strip()
                        for part in text.split("\0")) if s]


def read_board(device_tree: Path = DEVICE_TREE) -> tuple[tuple[str, ...], str]:
    """(compatible entries, model) from a device tree; ((), '') where there is none."""
    compatible = _read_property(device_tree / "compatible")
    model = _read_property(device_tree / "model")
    return (tuple(_strings(compatible)) if compatible else (),
            " ".join(_strings(model)) if model else "")


def identity_of(report: HostReport, backend: str, *, device_tree: Path = DEVICE_TREE,
                backend_version: str | None = None) -> HardwareIdentity:
    if backend_version is None:
        backend_version = (report.tensorrt.version if backend == "tensorrt"
                           else declared_version(backend))
    board, model = read_board(device_tree)
    gpu, caps = report.gpu, report.capabilities
    return HardwareIdentity(
        backend=backend, backend_version=backend_version, machine=platform.machine(),
        compute_capability=f"{gpu.major}.{gpu.minor}" if gpu else "",
        sm_count=gpu.sm_count if gpu else 0, total_memory=gpu.total_memory if gpu else 0,
        device_name=gpu.name if gpu else "", board=board, board_model=model,
        jetpack=caps.jetpack, l4t=caps.l4t, cuda_driver=gpu.driver_version if gpu else 0,
    )
