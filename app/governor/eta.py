"""How long the builds still ahead will take, from the history in the provenance records
(docs/governor.md: ETA). A timing cache cuts TensorRT builds several-fold, so builds with and
without one are not mixed while builds in the same state exist."""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import InferenceRuntime
from app.cache.record import BUILT, ProvenanceRecord, is_duration, read_record
from app.values import BuildConfig

_RECENT = 5  # the builds a median takes: recent ones reflect the power mode and cache
_KEEP = _RECENT - 1


@dataclass(frozen=True)
class PastBuild:
    model_name: str
    duration_s: float
    timing_cache: bool | None = None  # whether a timing cache was loaded; None when unrecorded


def past_build(record: Mapping[str, Any]) -> PastBuild | None:
    """A provenance record as history; None without a (plausible) build duration."""
    name, duration = record.get("model_name"), record.get("build_duration_s")
    if not isinstance(name, str) or not is_duration(duration) or not duration:
        return None
    cache = record.get("timing_cache")
    return PastBuild(name, float(duration), cache if isinstance(cache, bool) else None)


def estimate(model_name: str, timing_cache: bool | None,
             history: Iterable[PastBuild]) -> tuple[float | None, str]:
    """(seconds or None, how that was made) for ``model_name``'s build."""
    same = [b for b in history if b.model_name == model_name]
    if not same:
        return None, "no estimate: no earlier build of this model on this SKU"
    matching = [b for b in same if b.timing_cache == timing_cache]
    pool = (matching or same)[-_RECENT:]
    seconds = float(statistics.median(b.duration_s for b in pool))
    basis = f"median of {len(pool)} earlier build{'s' if len(pool) != 1 else ''}"
    if not matching:
        basis += " made with a different timing-cache state"
    return seconds, basis


@dataclass(frozen=True)
class Remaining:
    """Before building ``model_name`` (``position`` of ``total``): what is left, this included."""

    model_name: str
    position: int
    total: int
    models_left: int
    this_s: float | None  # this model's estimate
    basis: str  # how it was made
    left_s: float | None  # None when any model left has no estimate
    unknown: tuple[str, ...]

    def describe(self) -> str:
        left = f"{self.models_left} model{'s' if self.models_left != 1 else ''} left"
        if self.left_s is None:
            return f"{left}, no estimate ({', '.join(self.unknown)} never built on this SKU)"
        if not math.isfinite(self.left_s):  # past_build keeps such history out; never raise
            return f"{left}, no estimate"
        return f"{left}, about {_duration(self.left_s)}"

    def countdown(self, elapsed_s: float) -> float | None:
        """What is left ``elapsed_s`` into this build (an overrun adds nothing)."""
        if self.left_s is None or self.this_s is None:
            return None
        return self.left_s - self.this_s + max(0.0, self.this_s - elapsed_s)

    def as_event(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "position": self.position, "total": self.total,
                "models_left": self.models_left,
                "eta_s": rounded(self.left_s), "this_eta_s": rounded(self.this_s),
                "basis": self.basis, "no_estimate_for": list(self.unknown)}


def remaining(models: Sequence[str], history: Iterable[PastBuild],
              timing_cache: Mapping[str, bool | None] | None = None) -> list[Remaining]:
    """For each model to build, in order, what is left when it starts; ``timing_cache``: per
    model, whether one will be present."""
    past = list(history)
    estimates = [estimate(m, (timing_cache or {}).get(m), past) for m in models]
    out = []
    for i, model in enumerate(models):
        ahead = estimates[i:]
        unknown = tuple(m for m, (s, _) in zip(models[i:], ahead, strict=True) if s is None)
        total = None if unknown else sum(s or 0.0 for s, _ in ahead)
        out.append(Remaining(model, i + 1, len(models), len(models) - i, *estimates[i], total,
                             unknown))
    return out


def rounded(seconds: float | None) -> float | None:
    """An ETA as events carry it: to 0.1 s, never inf or NaN (None instead)."""
    return round(seconds, 1) if seconds is not None and math.isfinite(seconds) else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _history(stored: ProvenanceRecord | None, expected: ProvenanceRecord,
             name: str) -> list[PastBuild]:
    """The builds ``stored`` vouches for, oldest first; none when made elsewhere."""
    machine = ("sku", "backend", "backend_version", "device_name")
    if stored is None or any(getattr(stored, a) != getattr(expected, a) for a in machine):
        return []
    entries = list(stored.past_builds)
    if stored.status == BUILT:  # a pending record's own build never finished
        entries.append({"build_duration_s": stored.build_duration_s,
                        "timing_cache": stored.timing_cache})
    builds = (past_build({**e, "model_name": name}) for e in entries if isinstance(e, dict))
    return [b for b in builds if b is not None]


class Timeline:
    """The builds of one run. ``logger`` None: nothing is shown (the governor is off). With
    ``key``, only records that verify count (a forged record must not steer the ETA)."""

    def __init__(self, builds: Sequence[tuple[str, Path, ProvenanceRecord]],
                 logger: logging.Logger | None, key: bytes | None = None) -> None:
        self.order = [name for name, _, _ in builds]
        self.history = {name: _history(read_record(artifact, key).record, expected, name)
                        for name, artifact, expected in builds}
        self.logger = logger
        self.timing_cache: dict[str, bool | None] = {}

    def noted(self, name: str) -> dict[str, Any]:
        """The record fields of ``name``'s build: its timing-cache state and earlier builds."""
        kept = [{"build_duration_s": b.duration_s, "timing_cache": b.timing_cache}
                for b in self.history[name][-_KEEP:]]
        return {"timing_cache": self.timing_cache.get(name), "past_builds": kept}

    def start(self, name: str, runtime: InferenceRuntime, config: BuildConfig) -> BuildConfig:
        """Right before ``name``'s build: ``c10.build.eta``, and ``config`` with the ETA fields
        for the build's progress events."""
        state = runtime.timing_cache_present(config)
        self.timing_cache[name] = state
        if self.logger is None:
            return config
        # Every build writes the timing cache, so the builds after this one will find one.
        later = None if state is None else True
        states = {m: state if m == name else later for m in self.order}
        history = [b for builds in self.history.values() for b in builds]
        now = remaining(self.order, history, states)[self.order.index(name)]
        events.emit(self.logger, logging.INFO, events.BUILD_ETA, f"{name}: {now.describe()}",
                    **now.as_event(), timing_cache=state)
        started = time.monotonic()

        def progress_fields() -> dict[str, Any]:
            left = now.countdown(time.monotonic() - started)
            return {"eta_s": rounded(left), "models_left": now.models_left}

        return dataclasses.replace(config, progress_fields=progress_fields)
