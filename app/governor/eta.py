"""How long the builds still ahead will take, from earlier builds on the same SKU.

An estimate for one model is the median duration of its most recent builds on this SKU with the
same timing-cache state (a timing cache cuts TensorRT builds several-fold, so the two are
not mixed while builds in the same state exist). Without any earlier build of that model on
this SKU there is no estimate, and a plan containing such a model has no total either:
"no estimate" rather than a guess.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.cache.record import is_duration

__all__ = ["Estimate", "PastBuild", "Remaining", "estimate", "past_build", "remaining", "rounded"]

#: Builds kept per model: recent ones reflect the current power mode and cache best.
_RECENT = 5


@dataclass(frozen=True)
class PastBuild:
    model_name: str
    sku: str
    duration_s: float
    timing_cache: bool | None = None  # whether a timing cache was loaded; None when unrecorded


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    basis: str
    builds: int = 0


def past_build(record: Mapping[str, Any], sku: str) -> PastBuild | None:
    """A provenance record (model_name, build_duration_s, optional timing_cache) as history;
    None for records of reused engines or without a duration (or with one no build takes)."""
    name, duration = record.get("model_name"), record.get("build_duration_s")
    if not isinstance(name, str) or not is_duration(duration) or not duration:
        return None
    cache = record.get("timing_cache")
    return PastBuild(name, sku, float(duration), cache if isinstance(cache, bool) else None)


def estimate(model_name: str, sku: str, timing_cache: bool | None,
             history: Iterable[PastBuild]) -> Estimate:
    same = [b for b in history if b.model_name == model_name and b.sku == sku]
    if not same:
        return Estimate(None, "no estimate: no earlier build of this model on this SKU")
    matching = [b for b in same if b.timing_cache == timing_cache]
    pool = (matching or same)[-_RECENT:]
    seconds = float(statistics.median(b.duration_s for b in pool))
    basis = f"median of {len(pool)} earlier build{'s' if len(pool) != 1 else ''}"
    if not matching:
        basis += " made with a different timing-cache state"
    return Estimate(seconds, basis, len(pool))


@dataclass(frozen=True)
class Remaining:
    """Before building ``model_name`` (``position`` of ``total``): what is left, this included."""

    model_name: str
    position: int
    total: int
    models_left: int
    this: Estimate
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
        """What is left ``elapsed_s`` into this model's build: the estimate of the models after
        it, plus what is left of this one's (never below zero: an overrun adds nothing)."""
        if self.left_s is None or self.this.seconds is None:
            return None
        return self.left_s - self.this.seconds + max(0.0, self.this.seconds - elapsed_s)

    def as_event(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "position": self.position, "total": self.total,
                "models_left": self.models_left,
                "eta_s": rounded(self.left_s), "this_eta_s": rounded(self.this.seconds),
                "basis": self.this.basis, "no_estimate_for": list(self.unknown)}


def remaining(models: Sequence[str], sku: str, history: Iterable[PastBuild],
              timing_cache: Mapping[str, bool | None] | bool | None = None) -> list[Remaining]:
    """For each model to build, in the given order, what is left when it starts.

    ``timing_cache``: whether a timing cache will be present, for all models or per model.
    """
    past = list(history)
    estimates = [estimate(m, sku, timing_cache.get(m) if isinstance(timing_cache, Mapping)
                          else timing_cache, past) for m in models]
    out = []
    for i, model in enumerate(models):
        ahead = estimates[i:]
        unknown = tuple(m for m, e in zip(models[i:], ahead, strict=True) if e.seconds is None)
        total = None if unknown else sum(e.seconds or 0.0 for e in ahead)
        out.append(Remaining(model, i + 1, len(models), len(models) - i, estimates[i], total, unknown))
    return out


def rounded(seconds: float | None) -> float | None:
    """An ETA as events carry it, to 0.1 s; None for none, or for a figure that is not finite
    (whatever the history held, an event never carries inf or NaN)."""
    return round(seconds, 1) if seconds is not None and math.isfinite(seconds) else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
