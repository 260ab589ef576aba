"""An output's error against its variation across the samples."""

from __future__ import annotations

import numpy as np

from app.verify.measure import Spread


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _descriptors(count=6, shared=20.0, seed=0):
    """Embeddings with a large common component: cosine ~0.999 between any two."""
    rng = np.random.default_rng(seed)
    return _unit(shared * np.ones(32) + rng.standard_normal((count, 32)))


def test_an_error_small_against_the_norm_but_large_against_the_variation_fails():
    ref = _descriptors()
    noise = np.random.default_rng(9).standard_normal(ref.shape)
    bad = _unit(ref + 0.05 * noise)  # rel_l2 about 0.05 of a unit vector ...
    spread = Spread(embedding_rows=True)
    for r, g in zip(ref, bad, strict=True):
        spread.add(r[None, None], g[None, None])
    ratio, why = spread.ratio(max_abs=0.05, atol=1e-2)
    assert why == "" and ratio is not None and ratio > 1.0  # ... yet larger than the spread
    good = Spread(embedding_rows=True)
    for r in ref:
        good.add(r[None, None], r[None, None] + 1e-6)
    ratio, _ = good.ratio(max_abs=1e-3, atol=1e-4)
    assert ratio is not None and ratio < 1e-3
    assert good.neighbours(0.01) == (1.0, "")


def test_a_near_constant_output_is_not_judged():
    spread = Spread(embedding_rows=False)
    for _ in range(4):
        spread.add(np.full((1, 8), 3.0), np.full((1, 8), 3.01))  # a bias; fp16's error on it
    ratio, why = spread.ratio(max_abs=0.01, atol=1e-3)
    assert ratio is None and "near-constant" in why


def test_not_judged_within_atol_for_one_sample_or_varying_shapes():
    spread = Spread(embedding_rows=False)
    spread.add(np.ones((1, 4)), np.ones((1, 4)))
    assert spread.ratio(0.0, 1e-3)[1].endswith("fewer than 2 samples")
    spread.add(np.zeros((1, 4)), np.zeros((1, 4)))
    assert "within atol" in spread.ratio(1e-4, 1e-3)[1]
    spread.add(np.zeros((1, 5)), np.zeros((1, 5)))
    assert "shapes" in spread.ratio(1.0, 1e-3)[1]


def test_neighbours_count_only_clear_nearest_neighbours():
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [5.0, 4.0]])
    swapped = ref[[0, 2, 1, 3]]  # the engine's sample 1 and 2 exchanged
    spread = Spread(embedding_rows=True)
    for r, g in zip(ref, swapped, strict=True):
        spread.add(r[None], g[None])
    share, _ = spread.neighbours(0.0)
    assert share is not None and share < 1.0
    assert spread.neighbours(10.0) == (None, "neighbours not judged: no sample's nearest "
                                             "neighbour is clear")
    few = Spread(embedding_rows=True)
    few.add(ref[:1], ref[:1])
    assert few.neighbours(0.1) == (None, "")
