"""Compare one output of the engine with the reference's: the figures of :mod:`app.verify.report`.

Computed in float64 whatever the tensors' type, over the elements where the reference is finite
(a model may legitimately output -inf, e.g. masked logits; the engine must then match it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.verify.report import METRICS, SET_FIGURES, Failure, OutputFigures, Tolerance


def figures_of(name: str, reference: Any, candidate: Any) -> OutputFigures:
    """The metrics of one sample's output; shapes must already agree."""
    import numpy as np

    ref = np.asarray(reference).astype(np.float64, copy=False).ravel()
    got = np.asarray(candidate).astype(np.float64, copy=False).ravel()
    finite = np.isfinite(ref)
    # Where the reference is not finite, the engine must give the very same value.
    mismatched_special = int(np.count_nonzero(~finite & ~((got == ref) | (np.isnan(got) & np.isnan(ref)))))
    ref, got = ref[finite], got[finite]
    bad = ~np.isfinite(got)
    nonfinite = int(np.count_nonzero(bad)) + mismatched_special
    if bad.any():  # the metrics then describe the finite part; ``nonfinite`` fails the gate
        ref, got = ref[~bad], got[~bad]
    diff = got - ref
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    ref_norm, got_norm, diff_norm = (float(np.linalg.norm(v)) for v in (ref, got, diff))
    rel_l2 = diff_norm / ref_norm if ref_norm else (0.0 if diff_norm == 0.0 else float("inf"))
    if ref_norm == 0.0 or got_norm == 0.0:
        cosine = 1.0 if ref_norm == got_norm else 0.0
    else:
        cosine = float(np.clip(np.dot(ref, got) / (ref_norm * got_norm), -1.0, 1.0))
    return OutputFigures(name, tuple(int(d) for d in np.shape(reference)), max_abs, rel_l2, cosine,
                         nonfinite)


class Worst:
    """The worst figures per output across samples (max of errors, min of cosine and of the
    shares)."""

    def __init__(self) -> None:
        self.by_output: dict[str, OutputFigures] = {}

    def add(self, figures: OutputFigures) -> None:
        old = self.by_output.get(figures.name)
        if old is None:
            self.by_output[figures.name] = figures
            return
        self.by_output[figures.name] = replace(
            figures, max_abs=max(old.max_abs, figures.max_abs),
            rel_l2=max(old.rel_l2, figures.rel_l2), cosine=min(old.cosine, figures.cosine),
            nonfinite=old.nonfinite + figures.nonfinite,
            matched=_least(old.matched, figures.matched),
            matched_engine=_least(old.matched_engine, figures.matched_engine),
            agreement=_least(old.agreement, figures.agreement),
            radius=_least(old.radius, figures.radius))


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def first_failure(outputs: tuple[OutputFigures, ...], tolerance: Tolerance,
                  per_output: dict[str, Tolerance] | None = None) -> Failure | None:
    """The first bound broken, outputs in model order, non-finite values before any metric;
    ``rel_l2`` and ``cosine`` are not judged for an output within ``atol`` everywhere, nor
    for outputs compared as points, argmax or skip (their own figures judge them)."""
    for fig in outputs:
        bounds = (per_output or {}).get(fig.name, tolerance)
        if fig.compare == "skip":
            continue
        if fig.nonfinite:
            return Failure(fig.name, "nonfinite", float(fig.nonfinite), 0.0)
        values = fig.compare in ("values", "aligned")
        within_floor = fig.max_abs <= bounds.atol
        for metric, bound in (("rel_l2", bounds.rel_l2), ("cosine", bounds.cosine),
                              ("max_abs", bounds.max_abs)):
            if bound is None or not values or (within_floor and metric != "max_abs"):
                continue
            value = float(getattr(fig, metric))
            broken = not value >= bound if metric == "cosine" else not value <= bound
            if broken:
                return Failure(fig.name, metric, value, bound)
        for figure, key in SET_FIGURES.items():
            measured, limit = getattr(fig, figure), getattr(bounds, key)
            if measured is None or limit is None:
                continue
            broken = not measured <= limit if METRICS[key] == "max" else not measured >= limit
            if broken:
                return Failure(fig.name, figure, float(measured), float(limit))
    return None
