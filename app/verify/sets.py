"""Outputs compared as what they mean, one sample at a time: rows as a set (``points``), rows
that follow that matching (``aligned``), argmax agreement (``argmax``). Matching both ways, the
default radius and pooling: docs/accuracy-gate.md#comparisons-per-output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BLOCK = 1 << 22  # terms of a distance block (float64: 32 MiB)
_SPACINGS = 1024  # rows whose nearest neighbour sets the default radius


@dataclass(frozen=True)
class PointMatch:
    matched: float
    matched_engine: float
    radius: float
    counts: tuple[int, int, int, int]  # reference rows matched, of; engine rows matched, of
    pairs: tuple[tuple[Any, Any], ...]  # per leading index: mutually nearest pairs within it


def row_axis(ndim: int) -> int:
    return max(ndim - 2, 0)


def _rows(array: Any, axis: int) -> Any:
    """``array`` as ``[B, N, D]``: B the leading indices, N the rows along ``axis``."""
    import numpy as np

    a = np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    lead = int(np.prod(a.shape[:axis], dtype=np.int64))
    width = int(np.prod(a.shape[axis + 1:], dtype=np.int64))
    return a.reshape(lead, a.shape[axis], width)


def _nearest(a: Any, b: Any, *, skip_equal: bool = False) -> tuple[Any, Any]:
    """For each row of ``a``: the index of its nearest row of ``b`` and the distance
    (``skip_equal``: rows at distance 0 do not count)."""
    import numpy as np

    index = np.zeros(len(a), dtype=np.int64)
    distance = np.full(len(a), np.inf)
    if len(b) == 0:
        return index, distance
    # Blocks of at most _BLOCK terms: 100k keypoints must not ask for gigabytes.
    step = max(1, _BLOCK // max(1, len(b) * a.shape[1]))
    for start in range(0, len(a), step):
        d2 = ((a[start:start + step, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
        if skip_equal:
            d2[d2 == 0] = np.inf
        index[start:start + step] = d2.argmin(axis=1)
        distance[start:start + step] = np.sqrt(d2.min(axis=1))
    return index, distance


def _default_radius(ref: Any) -> float:
    import numpy as np

    if len(ref) < 2:
        return 0.0
    pick = ref if len(ref) <= _SPACINGS else ref[np.linspace(0, len(ref) - 1, _SPACINGS).astype(np.int64)]
    _, nearest = _nearest(pick, ref, skip_equal=True)
    finite = nearest[np.isfinite(nearest)]
    return float(np.median(finite)) / 2.0 if finite.size else 0.0


def match_points(reference: Any, candidate: Any, radius: float | None) -> PointMatch:
    import numpy as np

    integer = np.asarray(reference).dtype.kind in "iub"
    axis = row_axis(np.ndim(reference))
    ref = _rows(reference, axis).astype(np.float64)
    got = _rows(candidate, axis).astype(np.float64)
    if ref.shape[0] != got.shape[0] or ref.shape[2] != got.shape[2]:
        raise ValueError(f"rows of {list(np.shape(candidate))} cannot be matched to rows of "
                         f"{list(np.shape(reference))}")
    hits = total = hits_back = total_back = 0
    used = []
    pairs = []
    for r, g in zip(ref, got, strict=True):
        within = radius if radius is not None else (0.0 if integer else _default_radius(r))
        used.append(within)
        index, distance = _nearest(r, g)
        index_back, back = _nearest(g, r)
        ok = distance <= within
        hits, total = hits + int(ok.sum()), total + len(r)
        hits_back, total_back = hits_back + int((back <= within).sum()), total_back + len(g)
        # Mutual nearest only: a reference row whose engine row is missing borrows no neighbour's.
        mutual = ok & (index_back[index] == np.arange(len(r))) if len(g) else ok
        pairs.append((np.nonzero(mutual)[0], index[mutual]))
    return PointMatch(share(hits, total, total_back), share(hits_back, total_back, total),
                      min(used) if used else 0.0, (hits, total, hits_back, total_back), tuple(pairs))


def share(hits: int, total: int, other_total: int) -> float:
    return hits / total if total else (1.0 if not other_total else 0.0)


def aligned_rows(reference: Any, candidate: Any, axis: int,
                 pairs: tuple[tuple[Any, Any], ...]) -> tuple[Any, Any]:
    """The matched rows of an output that follows a ``points`` output, side by side."""
    import numpy as np

    ref, got = _rows(reference, axis), _rows(candidate, axis)
    if ref.shape[0] != len(pairs) or got.shape[0] != len(pairs) or ref.shape[2] != got.shape[2]:
        raise ValueError(f"rows of {list(np.shape(candidate))} do not follow the matched rows "
                         f"(reference {list(np.shape(reference))})")
    want = [r[i] for r, (i, _) in zip(ref, pairs, strict=True)]
    have = []
    for g, (_, j) in zip(got, pairs, strict=True):
        if len(j) and int(j.max()) >= len(g):
            raise ValueError(f"{len(g)} rows from the engine where its matched output has more")
        have.append(g[j])
    return np.concatenate(want), np.concatenate(have)


def argmax_agreement(reference: Any, candidate: Any, axis: int) -> float:
    """The share of equal argmax along ``axis`` (integer outputs: of equal elements)."""
    import numpy as np

    ref, got = np.asarray(reference), np.asarray(candidate)
    if ref.shape != got.shape:
        raise ValueError(f"shape {list(got.shape)} from the engine, {list(ref.shape)} from the "
                         "ONNX model")
    if ref.dtype.kind not in "iub":
        if ref.size == 0:
            return 1.0
        ref, got = ref.argmax(axis=axis), got.argmax(axis=axis)
    return float(np.mean(ref == got)) if ref.size else 1.0
