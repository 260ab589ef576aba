"""Whether, and with how much workspace, a build may start now (docs/governor.md): wait for
heat, refuse what would be OOM-killed, clamp the workspace. Swap is not counted for the clamp:
on a Jetson the GPU's allocations share RAM and cannot be swapped out."""

from __future__ import annotations

import fnmatch
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app import events
from app.cancel import cancellable_sleep
from app.config_sections import GovernorConfig
from app.errors import BuildConditionsError
from app.governor import BuildConditions, Memory, ThermalZone, read_conditions

MiB = 1 << 20


@dataclass(frozen=True)
class Admission:
    """A build may start: with ``workspace_mb`` (None when none was asked), after ``waited_s``."""

    workspace_mb: int | None
    clamped: bool
    conditions: BuildConditions
    waited_s: float = 0.0


Reader = Callable[[], BuildConditions]


def _considered(conditions: BuildConditions, settings: GovernorConfig) -> list[ThermalZone]:
    return [z for z in conditions.zones
            if not any(fnmatch.fnmatch(z.type, pat) for pat in settings.ignore_zones)]


def _hot(conditions: BuildConditions, settings: GovernorConfig) -> list[ThermalZone]:
    return [z for z in _considered(conditions, settings) if z.temp_c >= settings.max_temp_c]


def _zones_text(zones: list[ThermalZone]) -> str:
    return ", ".join(f"{z.type} {z.temp_c:.1f} °C" for z in zones)


def wait_until_cool(model_name: str, conditions: BuildConditions, settings: GovernorConfig,
                    logger: logging.Logger, read: Reader, sleep: Callable[[float], None],
                    clock: Callable[[], float]) -> tuple[BuildConditions, float]:
    """Wait while a zone is at or above ``max_temp_c``: (last reading, seconds waited)."""
    hot = _hot(conditions, settings)
    if not hot:
        return conditions, 0.0
    events.emit(logger, logging.WARNING, events.BUILD_THERMAL_WAIT,
                f"{model_name}: {_zones_text(hot)} at or above {settings.max_temp_c:g} °C; waiting "
                f"up to {settings.thermal_wait_s:g} s for it to cool before building",
                model_name=model_name, zones={z.type: z.temp_c for z in hot},
                max_temp_c=settings.max_temp_c, thermal_wait_s=settings.thermal_wait_s)
    start = clock()
    while hot and clock() - start < settings.thermal_wait_s:
        sleep(min(settings.poll_s, max(0.0, settings.thermal_wait_s - (clock() - start))))
        conditions = read()
        hot = _hot(conditions, settings)
    waited = clock() - start
    outcome = "cooled" if not hot else "refused" if settings.when_hot == "refuse" else "timeout"
    level, said = {
        "cooled": (logging.INFO, f"cooled below {settings.max_temp_c:g} °C after {waited:.0f} s"),
        "refused": (logging.ERROR, f"still {_zones_text(hot)} after {waited:.0f} s; not building"),
        "timeout": (logging.WARNING, f"still {_zones_text(hot)} after {waited:.0f} s; building "
                                     "anyway (expect throttling)")}[outcome]
    events.emit(logger, level, events.BUILD_THERMAL_DONE, f"{model_name}: {said}",
                model_name=model_name, outcome=outcome, waited_s=round(waited, 2))
    if outcome == "refused":
        raise BuildConditionsError(
            f"{model_name}: {_zones_text(hot)} stayed at or above governor.max_temp_c "
            f"{settings.max_temp_c:g} °C for {waited:.0f} s; the build was not started",
            hint="cool the robot (fan, shade) and run again, or raise governor.max_temp_c")
    return conditions, waited


def admit_memory(model_name: str, onnx_bytes: int, workspace_mb: int | None,
                 conditions: BuildConditions, settings: GovernorConfig,
                 logger: logging.Logger, device_free: int | None = None) -> tuple[int | None, bool]:
    """The workspace a build may use (clamped or not); BuildConditionsError when it cannot fit."""
    mem = conditions.memory
    if mem is None:
        return workspace_mb, False  # no /proc/meminfo: nothing to decide on (the event says so)
    need = settings.reserve_mb * MiB + int(settings.weights_factor * onnx_bytes)
    if mem.available + mem.swap_free < need:
        raise BuildConditionsError(
            f"{model_name}: not enough memory to build: {_mib(mem.available)} available and "
            f"{_swap(mem)}, the build needs about {_mib(need)} "
            f"({settings.reserve_mb} MiB + {settings.weights_factor:g} x the model's "
            f"{_mib(onnx_bytes)})", hint="stop other processes during the first boot, add swap, "
                                         "or build this engine on a larger module of the same SKU")
    if workspace_mb is None:
        return None, False
    budget, what = (mem.available, "memory") if device_free is None else (device_free, "GPU memory")
    cap_mb = int(settings.memory_share * budget) // MiB
    if cap_mb < settings.min_workspace_mb:
        raise BuildConditionsError(
            f"{model_name}: {_mib(budget)} of {what} available leaves a TensorRT workspace "
            f"of {cap_mb} MiB ({settings.memory_share:g} of it), under the "
            f"{settings.min_workspace_mb} MiB minimum", hint="stop other processes during the "
                                                             "first boot and run again")
    if workspace_mb <= cap_mb:
        return workspace_mb, False
    events.emit(logger, logging.WARNING, events.BUILD_WORKSPACE_CLAMPED,
                f"{model_name}: workspace {workspace_mb} MiB asked, {_mib(budget)} of {what} "
                f"available: building with {cap_mb} MiB ({settings.memory_share:g} of it)",
                model_name=model_name, workspace_mb=workspace_mb, clamped_mb=cap_mb,
                mem_available_bytes=mem.available, device_free_bytes=device_free,
                memory_share=settings.memory_share)
    return cap_mb, True


def govern_build(model_name: str, onnx_path: Path, workspace_mb: int | None,
                 settings: GovernorConfig, logger: logging.Logger, *,
                 read: Reader | None = None,
                 sleep: Callable[[float], None] = cancellable_sleep,
                 clock: Callable[[], float] = time.monotonic,
                 device_free: int | None = None) -> Admission:
    """Right before one build; ``device_free``: a discrete GPU's free bytes, bounding the workspace."""
    if read is None:
        # The nvpmodel binary answers for the host only: a fake tree (tests) has its files.
        nvpmodel = shutil.which("nvpmodel") if settings.root == Path("/") else None
        read = functools.partial(read_conditions, settings.root, nvpmodel)
    conditions = read()
    events.emit(logger, logging.INFO, events.BUILD_CONDITIONS,
                f"{model_name}: build conditions: {_summary(conditions)}",
                model_name=model_name, **conditions.as_event())
    throttling = [z for z in _considered(conditions, settings) if z.throttling]
    if throttling:
        events.emit(logger, logging.WARNING, events.BUILD_THROTTLING,
                    f"{model_name}: the SoC is throttling ("
                    + ", ".join(f"{z.type} {z.temp_c:.1f} °C past its {z.passive_c:g} °C trip"
                                for z in throttling) + "); the build will be slow",
                    model_name=model_name, zones={z.type: z.temp_c for z in throttling})
    conditions, waited = wait_until_cool(model_name, conditions, settings, logger, read, sleep,
                                         clock)
    onnx_bytes = Path(onnx_path).stat().st_size
    allowed, clamped = admit_memory(model_name, onnx_bytes, workspace_mb, conditions, settings, logger,
                                    device_free)
    return Admission(allowed, clamped, conditions, waited)


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n < 10 * 1024 * MiB else f"{n / (1024 * MiB):.1f} GiB"


def _swap(mem: Memory) -> str:
    return f"{_mib(mem.swap_free)} swap free" if mem.swap_total else "no swap"


def _summary(c: BuildConditions) -> str:
    parts = [f"{_mib(c.memory.available)} available, {_swap(c.memory)}"
             if c.memory else "memory unknown"]
    if c.power_mode is not None:
        parts.append(f"power mode {c.power_mode['name'] or '?'} ({c.power_mode['id']})")
    if c.zones:
        hottest = max(c.zones, key=lambda z: z.temp_c)
        parts.append(f"hottest {hottest.type} {hottest.temp_c:.1f} °C")
    return ", ".join(parts)
