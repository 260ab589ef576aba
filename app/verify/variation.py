"""An output's error against how much the output varies between inputs.

``variation`` = ||engine - reference|| / ||reference - its mean||, both over every item: for
``values`` outputs an item is one sample's whole output (the reference centred on its mean over
the samples); for ``aligned`` outputs an item is one matched row (a descriptor against the
spread of descriptors). An error comparable to the difference between two inputs fails however
small it is against the output's norm (a place-recognition descriptor whose images all have
cosine 0.999 with one another).

Not judged (None, with a note), so that it never fails a healthy engine for want of variation:
fewer than two items, items of different shapes (dynamic outputs), an output that varies by
less than :data:`CONSTANT` of its norm across the items (near-constant: a bias, a saturated
map, an output that ignores random inputs), or whose error is within the precision's ``atol``
everywhere (the values comparison's noise floor).

``neighbours`` (embeddings: one row of 2+ values per sample, 3+ samples): the share of samples
whose nearest neighbour among the samples (Euclidean) is the same for the engine as for the
reference. A sample counts only when the reference's nearest neighbour is nearer than its
second by more than twice the error the variation bound allows (2 x bound x the items' RMS
spread): a closer tie may be flipped by an engine within the bound. No sample counting: None.
"""

from __future__ import annotations

from typing import Any

#: Variation below this share of the output's norm: near-constant, not judged.
CONSTANT = 1e-3


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
        """Items along axis 0 of both arrays (one sample: ``array[None]``)."""
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
        """(error / variation, why not measured)."""
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
        """(nearest-neighbour agreement, why not measured)."""
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
