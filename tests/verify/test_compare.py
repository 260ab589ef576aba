"""The metrics on arrays with known answers, and the pass/fail rule."""

from __future__ import annotations

import numpy as np
import pytest

from app.verify.accuracy import first_failure
from app.verify.measure import figures_of, worse
from app.verify.report import OutputFigures, Tolerance


def test_identical_outputs_are_exact():
    x = np.linspace(-1, 1, 50, dtype=np.float32).reshape(5, 10)
    fig = figures_of("y", x, x.copy())
    assert (fig.max_abs, fig.rel_l2, fig.cosine, fig.nonfinite, fig.shape) == (0.0, 0.0, 1.0, 0, (5, 10))


def test_known_values():
    ref = np.array([3.0, 4.0], np.float32)  # norm 5
    fig = figures_of("y", ref, np.array([3.0, 4.5], np.float32))
    assert fig.max_abs == pytest.approx(0.5)
    assert fig.rel_l2 == pytest.approx(0.1)
    assert fig.cosine == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    scaled = figures_of("y", ref, 2 * ref)  # same direction, twice the size
    assert scaled.cosine == pytest.approx(1.0) and scaled.rel_l2 == pytest.approx(1.0)


def test_all_zero_outputs():
    zeros = np.zeros(4, np.float32)
    assert figures_of("y", zeros, zeros).rel_l2 == 0.0
    fig = figures_of("y", zeros, np.ones(4, np.float32))
    assert fig.rel_l2 == float("inf") and fig.cosine == 0.0


def test_nan_or_inf_where_the_reference_is_finite_is_counted():
    ref = np.ones(6, np.float32)
    got = ref.copy()
    got[1], got[4] = np.nan, np.inf
    fig = figures_of("y", ref, got)
    assert fig.nonfinite == 2 and fig.max_abs == 0.0  # the finite rest agrees
    failure = first_failure((fig,), Tolerance(rel_l2=1.0))
    assert failure is not None and (failure.metric, failure.value) == ("nonfinite", 2.0)


def test_a_non_finite_reference_must_be_matched_exactly():
    ref = np.array([-np.inf, 1.0, np.nan], np.float32)  # e.g. masked logits
    assert figures_of("y", ref, ref.copy()).nonfinite == 0
    assert figures_of("y", ref, np.array([-1e30, 1.0, np.nan], np.float32)).nonfinite == 1


def test_float16_and_integer_outputs_are_compared_in_float64():
    ref = np.array([1, 2, 3], np.int64)
    assert figures_of("idx", ref, np.array([1, 2, 4], np.int64)).max_abs == 1.0
    half = np.array([0.1, 0.2], np.float16)
    assert figures_of("h", half.astype(np.float32), half).max_abs < 1e-4


def test_worst_case_over_samples():
    first = worse(None, OutputFigures("y", (2,), 0.1, 0.01, 0.999, 0))
    assert worse(first, OutputFigures("y", (2,), 0.05, 0.02, 0.9999, 1)) == OutputFigures(
        "y", (2,), 0.1, 0.02, 0.999, 1)


def test_first_failure_order_and_bounds():
    tol = Tolerance(rel_l2=0.1, cosine=0.99, max_abs=None, atol=0.0)
    good = OutputFigures("a", (1,), 1.0, 0.05, 0.995)
    bad_cos = OutputFigures("b", (1,), 1.0, 0.05, 0.98)
    bad_rel = OutputFigures("c", (1,), 1.0, 0.2, 0.5)
    assert first_failure((good,), tol) is None
    failure = first_failure((good, bad_cos, bad_rel), tol)
    assert failure is not None and (failure.output, failure.metric, failure.relation) == ("b", "cosine", "<")
    failure = first_failure((bad_rel,), tol)
    assert failure is not None and (failure.metric, failure.value, failure.threshold, failure.relation) == (
        "rel_l2", 0.2, 0.1, ">")
    assert first_failure((OutputFigures("n", (1,), 1.0, float("nan"), 1.0),), tol) is not None
    assert first_failure((good,), Tolerance(max_abs=0.5)) is not None  # max_abs only when bounded


def test_an_output_within_the_noise_floor_passes_whatever_its_relative_figures():
    """A detector's scores on an empty image: ~1e-6 everywhere, relative figures meaningless."""
    ref = np.full(100, 1e-6, np.float32)
    got = ref + np.float32(1.5e-7)
    fig = figures_of("scores", ref, got)
    assert fig.rel_l2 > 0.1  # large relative error on a near-zero output
    assert first_failure((fig,), Tolerance(rel_l2=1e-4, cosine=0.99999, atol=5e-5)) is None
    assert first_failure((fig,), Tolerance(rel_l2=1e-4, atol=1e-7)) is not None
    assert first_failure((fig,), Tolerance(max_abs=1e-7, atol=1.0)) is not None  # max_abs still judged
