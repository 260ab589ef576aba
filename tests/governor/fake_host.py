"""A fake procfs/sysfs tree (real files under tmp_path) for the governor's readings."""

from __future__ import annotations

from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20


def write_meminfo(root: Path, available: int, swap_free: int = 0, total: int = 8 * GiB) -> None:
    proc = root / "proc"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "meminfo").write_text(
        f"MemTotal:       {total // 1024} kB\nMemFree:         1000 kB\n"
        f"MemAvailable:   {available // 1024} kB\nBuffers:           0 kB\n"
        f"SwapTotal:      {max(swap_free, 0) // 1024} kB\nSwapFree:       {swap_free // 1024} kB\n")


def write_zone(root: Path, index: int, kind: str, temp_c: float,
               trips: tuple[tuple[str, float], ...] = ()) -> Path:
    zone = root / "sys" / "class" / "thermal" / f"thermal_zone{index}"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text(kind + "\n")
    set_temp(zone, temp_c)
    for i, (trip_type, trip_c) in enumerate(trips):
        (zone / f"trip_point_{i}_type").write_text(trip_type + "\n")
        (zone / f"trip_point_{i}_temp").write_text(f"{int(trip_c * 1000)}\n")
    return zone


def set_temp(zone: Path, temp_c: float) -> None:
    (zone / "temp").write_text(f"{int(temp_c * 1000)}\n")


def write_nvpmodel(root: Path, status: str | None = "pmode:0002 fmode:quiet",
                   conf_default: int | None = 2) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    lines = ["# nvpmodel.conf", "< POWER_MODEL ID=0 NAME=MAXN >", "CPU_ONLINE CORE_0 1",
             "< POWER_MODEL ID=1 NAME=MODE_10W >", "< POWER_MODEL ID=2 NAME=MODE_15W >"]
    if conf_default is not None:
        lines.append(f"< PM_CONFIG DEFAULT={conf_default} >")
    (etc / "nvpmodel.conf").write_text("\n".join(lines) + "\n")
    if status is not None:
        folder = root / "var" / "lib" / "nvpmodel"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "status").write_text(status + "\n")


def orin(root: Path, available: int = 6 * GiB, cpu_c: float = 45.0) -> Path:
    """An Orin-like host: meminfo, power mode 15 W, three zones (one a PMIC stuck at 100 °C)."""
    write_meminfo(root, available, swap_free=2 * GiB)
    write_nvpmodel(root)
    write_zone(root, 0, "CPU-therm", cpu_c, (("passive", 99.0), ("critical", 104.5)))
    write_zone(root, 1, "GPU-therm", cpu_c - 2, (("passive", 99.0),))
    write_zone(root, 2, "PMIC-Die", 100.0)
    return root
