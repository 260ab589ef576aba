"""One check's measurements: every sample's outputs compared by their rules into the figures of
:mod:`app.verify.report`, the worst kept; ``variation`` and ``neighbours``, and when they are
not judged: docs/accuracy-gate.md#error-against-variation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.config_sections import AccuracyOutputConfig
from app.errors import AccuracyError
from app.verify.report import OutputFigures, Tolerance
from app.verify.sets import (
    PointMatch,
    aligned_rows,
    argmax_agreement,
    match_points,
    row_axis,
    share,
)

_REBUILD = "rebuild the engine from this model"
CONSTANT = 1e-3


class Measure:
    def __init__(self, model_name: str, names: tuple[str, ...],
                 rules: dict[str, AccuracyOutputConfig]) -> None:
        self.model_name, self.names, self.rules = model_name, names, rules
        self.worst: dict[str, OutputFigures] = {}  # per output, across samples
        self.spreads: dict[str, Spread] = {}
        self.counts: dict[str, list[int]] = {}  # points: rows matched and rows, pooled
        # Anchors first: an aligned output needs its points output's matching of this sample.
        self.order = sorted(names, key=lambda n: rules[n].comparison != "points")

    def add(self, want: dict[str, Any], got: dict[str, Any]) -> None:
        matches: dict[str, tuple[PointMatch, int]] = {}  # points: the matching and its row axis
        for name in self.order:
            rule = self.rules[name]
            if rule.comparison == "skip":
                self._keep(OutputFigures(name, _shape(want[name]), 0.0, 0.0, 1.0),
                           compare="skip", note=rule.reason or "skipped")
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
             matches: dict[str, tuple[PointMatch, int]]) -> None:
        import numpy as np

        note = rule.reason or ""
        if rule.comparison == "points":
            axis = row_axis(np.ndim(want))
            match = match_points(want, got, rule.radius)
            matches[name] = match, axis
            pooled = self.counts.setdefault(name, [0, 0, 0, 0])
            for i, count in enumerate(match.counts):
                pooled[i] += count
            ref, eng = aligned_rows(want, got, axis, match.pairs)
            self._keep(figures_of(name, ref, eng), shape=_shape(want), compare="points",
                       matched=match.matched, matched_engine=match.matched_engine,
                       radius=match.radius, note=note)
        elif rule.comparison == "argmax":
            agreement = argmax_agreement(want, got, rule.axis)
            # -inf against a finite value is never a maximum (NaN and +inf would be taken for one).
            self._keep(figures_of(name, want, got, minus_inf_fails=False), compare="argmax",
                       agreement=agreement, note=note)
        elif rule.comparison == "aligned":
            anchor, axis = matches[rule.aligned_to or ""]
            ref, eng = aligned_rows(want, got, axis, anchor.pairs)
            self._keep(figures_of(name, ref, eng), shape=_shape(want), compare="aligned", note=note)
            self.spreads.setdefault(name, Spread(False)).add(ref, eng)
        else:
            if np.shape(want) != np.shape(got):
                raise ValueError(f"shape {list(np.shape(got))} from the engine, "
                                 f"{list(np.shape(want))} from the ONNX model")
            self._keep(figures_of(name, want, got), note=note)
            rows = np.ndim(want) >= 1 and np.size(want) == np.shape(want)[-1] >= 2
            self.spreads.setdefault(name, Spread(bool(rows))).add(np.asarray(want)[None],
                                                                  np.asarray(got)[None])

    def _keep(self, figures: OutputFigures, **changes: Any) -> None:
        figures = replace(figures, **changes)
        self.worst[figures.name] = worse(self.worst.get(figures.name), figures)

    def figures(self, bounds: dict[str, Tolerance]) -> tuple[OutputFigures, ...]:
        out = []
        for name in self.names:
            figures = self.worst[name]
            if name in self.counts:
                hits, total, hits_back, total_back = self.counts[name]
                figures = replace(figures, matched=share(hits, total, total_back),
                                  matched_engine=share(hits_back, total_back, total))
            spread = self.spreads.get(name)
            if spread is not None:
                ratio, why = spread.ratio(figures.max_abs, bounds[name].atol)
                near, why_not = spread.neighbours(bounds[name].variation)
                note = "; ".join(t for t in (figures.note, why, why_not) if t)
                figures = replace(figures, variation=ratio, neighbours=near, note=note)
            out.append(figures)
        return tuple(out)


def figures_of(name: str, reference: Any, candidate: Any, *,
               minus_inf_fails: bool = True) -> OutputFigures:
    """The metrics of one sample's output, in float64, over the elements where the reference is
    finite (where it is not, e.g. masked logits, the engine must give the same value)."""
    import numpy as np

    ref = np.asarray(reference).astype(np.float64, copy=False).ravel()
    got = np.asarray(candidate).astype(np.float64, copy=False).ravel()
    finite = np.isfinite(ref)
    # Log-probabilities that underflow on one side only: the hint names the export, not precision.
    engine_minus_inf = int(np.count_nonzero(finite & np.isneginf(got)))
    model_minus_inf = int(np.count_nonzero(np.isneginf(ref) & np.isfinite(got)))
    mismatched_special = int(np.count_nonzero(~finite & ~((got == ref) | (np.isnan(got) & np.isnan(ref)))))
    ref, got = ref[finite], got[finite]
    bad = ~np.isfinite(got)
    nonfinite = int(np.count_nonzero(bad)) + mismatched_special
    minus_inf = engine_minus_inf + model_minus_inf
    if not minus_inf_fails:
        nonfinite, mismatched_special, minus_inf = (nonfinite - minus_inf,
                                                    mismatched_special - model_minus_inf, 0)
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
    return OutputFigures(name, _shape(reference), max_abs, rel_l2, cosine,
                         nonfinite, nonfinite_model=mismatched_special, minus_inf=minus_inf)


def worse(old: OutputFigures | None, new: OutputFigures) -> OutputFigures:
    if old is None:
        return new
    return replace(new, max_abs=max(old.max_abs, new.max_abs),
                   rel_l2=max(old.rel_l2, new.rel_l2), cosine=min(old.cosine, new.cosine),
                   nonfinite=old.nonfinite + new.nonfinite,
                   nonfinite_model=old.nonfinite_model + new.nonfinite_model,
                   minus_inf=old.minus_inf + new.minus_inf,
                   matched=_least(old.matched, new.matched),
                   matched_engine=_least(old.matched_engine, new.matched_engine),
                   agreement=_least(old.agreement, new.agreement),
                   radius=_least(old.radius, new.radius))


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _shape(array: Any) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(d) for d in np.shape(array))

class Spread:
    """Accumulates one output's items (reference and engine) across samples."""

    def __init__(self, embedding_rows: bool) -> None:
        self.total: Any = None  # the reference items' sum (float64)
        self.items = 0
        self.ref_sq = 0.0  # sum of ||reference item||^2
        self.err_sq = 0.0  # sum of ||engine item - reference item||^2
        self.shape: tuple[int, ...] | None = None
        self.varied_shape = False
        self.embedding_rows = embedding_rows
        self.kept: list[tuple[Any, Any]] = []  # embeddings: (reference, engine) per sample

    def add(self, reference: Any, candidate: Any) -> None:
        import numpy as np

        ref = np.asarray(reference, dtype=np.float64)
        got = np.asarray(candidate, dtype=np.float64)
        if not (np.isfinite(ref).all() and np.isfinite(got).all()):
            self.varied_shape = True  # non-finite values are judged elsewhere; no ratio of them
            return
        if self.shape is None:
            self.shape, self.total = ref.shape[1:], np.zeros(ref.shape[1:])
        elif ref.shape[1:] != self.shape:
            self.varied_shape = True
            return
        self.total = self.total + ref.sum(axis=0)
        self.items += ref.shape[0]
        self.ref_sq += float((ref ** 2).sum())
        self.err_sq += float(((got - ref) ** 2).sum())
        if self.embedding_rows:
            self.kept.append((ref.reshape(-1), got.reshape(-1)))

    def ratio(self, max_abs: float, atol: float) -> tuple[float | None, str]:
        import numpy as np

        if self.varied_shape:
            return None, "variation not judged: shapes or non-finite values vary across samples"
        if self.items < 2:
            return None, "variation not judged: fewer than 2 samples"
        spread_sq = max(self.ref_sq - float((self.total ** 2).sum()) / self.items, 0.0)
        if spread_sq <= (CONSTANT ** 2) * self.ref_sq:
            return None, "variation not judged: the output is near-constant across the samples"
        if max_abs <= atol:
            return None, "variation not judged: the error is within atol everywhere"
        return float(np.sqrt(self.err_sq / spread_sq)), ""

    def neighbours(self, bound: float | None) -> tuple[float | None, str]:
        import numpy as np

        if not self.embedding_rows or self.varied_shape or len(self.kept) < 3:
            return None, ""
        ref = np.stack([r for r, _ in self.kept])
        got = np.stack([g for _, g in self.kept])
        spread = np.sqrt(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean())
        margin = 2.0 * (bound or 0.0) * spread
        d_ref, d_got = _distances(ref), _distances(got)
        counted = agree = 0
        for i in range(len(ref)):
            first, second = np.sort(d_ref[i])[:2]
            if second - first <= margin:
                continue
            counted += 1
            agree += int(d_ref[i].argmin() == d_got[i].argmin())
        if not counted:
            return None, "neighbours not judged: no sample's nearest neighbour is clear"
        return agree / counted, ""


def _distances(items: Any) -> Any:
    import numpy as np

    d = np.sqrt(((items[:, None, :] - items[None, :, :]) ** 2).sum(axis=-1))
    np.fill_diagonal(d, np.inf)
    return d
