"""One check's measurements: every sample's outputs compared by their rules
(:mod:`app.verify.rules`), the worst figures kept, the variation judged at the end.

``points`` outputs are measured first in each sample, so that the outputs aligned to them find
their matching; only ``values`` and ``aligned`` outputs must have the reference's shape (their
rows being matched for ``aligned``): the rows of a set may be more or fewer (a data-dependent
output, an engine that finds one keypoint more).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.config_sections import AccuracyOutputConfig
from app.errors import AccuracyError
from app.verify.compare import Worst, figures_of
from app.verify.report import OutputFigures, Tolerance
from app.verify.sets import PointMatch, aligned_rows, argmax_agreement, match_points, row_axis
from app.verify.variation import Spread

_REBUILD = "rebuild the engine from this model"


class Measure:
    """Feed it each sample's outputs (:meth:`add`), then read the figures (:meth:`figures`)."""

    def __init__(self, model_name: str, names: tuple[str, ...],
                 rules: dict[str, AccuracyOutputConfig]) -> None:
        self.model_name, self.names, self.rules = model_name, names, rules
        self.worst = Worst()
        self.spreads: dict[str, Spread] = {}
        self.anchor_ndim: dict[str, int] = {}  # the rows of an aligned output: its anchor's
        self.counts: dict[str, list[int]] = {}  # points: rows matched and rows, pooled
        # Anchors first: an aligned output needs its points output's matching of this sample.
        self.order = sorted(names, key=lambda n: rules[n].comparison != "points")

    def add(self, want: dict[str, Any], got: dict[str, Any]) -> None:
        """One sample's outputs: the reference's and the engine's."""
        matches: dict[str, PointMatch] = {}
        for name in self.order:
            rule = self.rules[name]
            if rule.comparison == "skip":
                self.worst.add(OutputFigures(name, tuple(_shape(want[name])), 0.0, 0.0, 1.0,
                                             compare="skip", note=rule.reason or "skipped"))
                continue
            if name not in got:
                raise AccuracyError(f"{self.model_name}: the engine gave no output {name!r} "
                                    f"(it gave {sorted(got)})", hint=_REBUILD)
            try:
                self._one(name, rule, want[name], got[name], matches)
            except ValueError as exc:
                raise AccuracyError(f"{self.model_name}: output {name!r}: {exc}",
                                    hint=_REBUILD) from exc

    def _one(self, name: str, rule: AccuracyOutputConfig, want: Any, got: Any,
             matches: dict[str, PointMatch]) -> None:
        import numpy as np

        note = rule.reason or ""
        if rule.comparison == "points":
            match = matches[name] = match_points(want, got, rule.radius)
            self.anchor_ndim[name] = int(np.ndim(want))
            pooled = self.counts.setdefault(name, [0, 0, 0, 0])
            for i, count in enumerate(match.counts):
                pooled[i] += count
            ref, eng = aligned_rows(want, got, row_axis(np.ndim(want)), match.pairs)
            figures = replace(figures_of(name, ref, eng), shape=tuple(_shape(want)))
            self.worst.add(replace(figures, compare="points", matched=match.matched,
                                   matched_engine=match.matched_engine, radius=match.radius,
                                   note=note))
            return
        if rule.comparison == "argmax":
            agreement = argmax_agreement(want, got, rule.axis)
            figures = figures_of(name, want, got)
            self.worst.add(replace(figures, compare="argmax", agreement=agreement, note=note))
            return
        if rule.comparison == "aligned":
            anchor = matches[rule.aligned_to or ""]
            axis = row_axis(self.anchor_ndim[rule.aligned_to or ""])
            ref, eng = aligned_rows(want, got, axis, anchor.pairs)
            figures = replace(figures_of(name, ref, eng), shape=tuple(_shape(want)))
            self.worst.add(replace(figures, compare="aligned", note=note))
            self._spread(name, False).add(ref, eng)
            return
        if np.shape(want) != np.shape(got):
            raise ValueError(f"shape {list(np.shape(got))} from the engine, "
                             f"{list(np.shape(want))} from the ONNX model")
        self.worst.add(replace(figures_of(name, want, got), note=note))
        rows = np.ndim(want) >= 1 and np.size(want) == np.shape(want)[-1] >= 2
        self._spread(name, bool(rows)).add(np.asarray(want)[None], np.asarray(got)[None])

    def _spread(self, name: str, embedding_rows: bool) -> Spread:
        if name not in self.spreads:
            self.spreads[name] = Spread(embedding_rows)
        return self.spreads[name]

    def figures(self, bounds: dict[str, Tolerance]) -> tuple[OutputFigures, ...]:
        """The worst figures per output, model order, with the variation and neighbours."""
        out = []
        for name in self.names:
            figures = self.worst.by_output[name]
            if name in self.counts:
                hits, total, hits_back, total_back = self.counts[name]
                figures = replace(figures, matched=_share(hits, total, total_back),
                                  matched_engine=_share(hits_back, total_back, total))
            spread = self.spreads.get(name)
            if spread is not None:
                ratio, why = spread.ratio(figures.max_abs, bounds[name].atol)
                near, why_not = spread.neighbours(bounds[name].variation)
                note = "; ".join(t for t in (figures.note, why, why_not) if t)
                figures = replace(figures, variation=ratio, neighbours=near, note=note)
            out.append(figures)
        return tuple(out)


def _shape(array: Any) -> list[int]:
    import numpy as np

    return [int(d) for d in np.shape(array)]


def _share(hits: int, total: int, other_total: int) -> float:
    """Rows matched over rows; no rows: 1 when the other side has none either."""
    return hits / total if total else (1.0 if not other_total else 0.0)
