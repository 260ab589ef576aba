"""The build governor (docs/governor.md): this module reads memory, power mode and heat below
``root``, :mod:`.admission` decides, :mod:`.eta` estimates. Loaded only when a build runs. A
value that cannot be read is absent, never an error: readings inform, they do not fail a boot."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small

_READ_LIMIT = 16 * 1024
_MAX_ZONES = 64
_MAX_TRIPS = 16
# Readings outside this range come from absent or broken sensors (-40 °C floors, 0xFFFF codes).
_PLAUSIBLE_C = (-50.0, 200.0)


def _text(path: Path, limit: int = _READ_LIMIT) -> str | None:
    try:
        return read_small(path, limit, follow_links=True, truncate=True).decode("utf-8", "replace")
    except OSError:
        return None


@dataclass(frozen=True)
class Memory:
    total: int
    available: int
    swap_total: int = 0
    swap_free: int = 0


@dataclass(frozen=True)
class ThermalZone:
    zone: str  # thermal_zoneN
    type: str  # CPU-therm, GPU-therm, tj-therm...
    temp_c: float
    passive_c: float | None = None  # the lowest passive (throttling) trip point
    critical_c: float | None = None

    @property
    def throttling(self) -> bool:
        return self.passive_c is not None and self.temp_c >= self.passive_c


@dataclass(frozen=True)
class BuildConditions:
    memory: Memory | None
    power_mode: dict[str, Any] | None  # id, name, and source: "status", "default" or "nvpmodel -q"
    zones: tuple[ThermalZone, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def as_event(self) -> dict[str, Any]:
        mem = self.memory
        return {
            "mem_total_bytes": mem.total if mem else None,
            "mem_available_bytes": mem.available if mem else None,
            "swap_total_bytes": mem.swap_total if mem else None,
            "swap_free_bytes": mem.swap_free if mem else None,
            "power_mode": self.power_mode,
            "thermal": [asdict(z) for z in self.zones],
            "hottest_c": max((z.temp_c for z in self.zones), default=None),
            "throttling": [z.type for z in self.zones if z.throttling],
            "notes": list(self.notes),
        }


def read_power_mode(root: Path, nvpmodel: str | None = None,
                    timeout_s: float = 3.0) -> dict[str, Any] | None:
    """From nvpmodel's files, else ``nvpmodel -q`` (``nvpmodel``: the binary) when neither exists."""
    conf = _text(root / "etc" / "nvpmodel.conf", limit=256 * 1024) or ""
    names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
    status = _text(root / "var" / "lib" / "nvpmodel" / "status") or ""
    for found, source in ((re.search(r"pmode:\s*(\d+)", status), "status"),
                          (re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", conf), "default")):
        if found:
            return {"id": int(found[1]), "name": names.get(int(found[1])), "source": source}
    if nvpmodel is None or conf or status:
        return None
    try:
        out = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=timeout_s,
                             stdin=subprocess.DEVNULL, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # "NV Fan Mode:quiet" (optional), "NV Power Mode: MAXN", then the id on a line of its own.
    name = re.search(r"NV Power Mode:\s*(\S+)", out)
    ident = re.search(r"^\s*(\d+)\s*$", out, re.MULTILINE)
    if not ident:
        return None
    return {"id": int(ident[1]), "name": name[1] if name else None, "source": "nvpmodel -q"}


def _millideg(text: str | None) -> float | None:
    try:
        value = int((text or "").strip()) / 1000.0
    except ValueError:
        return None
    return value if _PLAUSIBLE_C[0] <= value <= _PLAUSIBLE_C[1] else None


def read_zones(root: Path) -> tuple[tuple[ThermalZone, ...], tuple[str, ...]]:
    base = root / "sys" / "class" / "thermal"
    try:
        entries = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
    except OSError:
        return (), ()
    zones, notes = [], []
    for entry in entries[:_MAX_ZONES]:
        kind = (_text(entry / "type", 256) or entry.name).strip() or entry.name
        temp = _millideg(_text(entry / "temp", 64))
        if temp is None:
            notes.append(f"{entry.name} ({kind}): no plausible temperature")
            continue
        trips: dict[str, list[float]] = {}
        for i in range(_MAX_TRIPS):
            trip_type = _text(entry / f"trip_point_{i}_type", 64)
            if trip_type is None:
                break
            trip_temp = _millideg(_text(entry / f"trip_point_{i}_temp", 64))
            if trip_temp is not None:
                trips.setdefault(trip_type.strip(), []).append(trip_temp)
        zones.append(ThermalZone(entry.name, kind, temp, min(trips.get("passive", []), default=None),
                                 min(trips.get("critical", []), default=None)))
    if len(entries) > _MAX_ZONES:
        notes.append(f"only the first {_MAX_ZONES} of {len(entries)} thermal zones were read")
    return tuple(zones), tuple(notes)


def read_conditions(root: Path = Path("/"), nvpmodel: str | None = None) -> BuildConditions:
    root = Path(root)
    zones, notes = read_zones(root)
    values: dict[str, int] = {}
    for line in (_text(root / "proc" / "meminfo") or "").splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*(kB)?", line)
        if match:
            values[match[1]] = int(match[2]) * (1024 if match[3] else 1)
    memory = None
    if "MemAvailable" in values and "MemTotal" in values:
        memory = Memory(values["MemTotal"], values["MemAvailable"], values.get("SwapTotal", 0),
                        values.get("SwapFree", 0))
    else:
        notes += (f"{root / 'proc' / 'meminfo'} gave no MemAvailable",)
    return BuildConditions(memory, read_power_mode(root, nvpmodel), zones, notes)
