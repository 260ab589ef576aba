"""Rows as a set, rows that follow it, argmax agreement: one sample's outputs at a time."""

from __future__ import annotations

import numpy as np
import pytest

from app.verify.sets import (
    aligned_rows,
    argmax_agreement,
    match_points,
    row_axis,
)

GRID = np.array([[[x * 4.0, y * 4.0] for x in range(5) for y in range(4)]])  # [1, 20, 2]


def test_reordered_rows_all_match_and_follow():
    order = np.random.default_rng(0).permutation(20)
    got = GRID[:, order] + 0.3  # another order, a sub-pixel shift
    match = match_points(GRID, got, None)
    assert match.radius == 2.0  # half the spacing of the reference's rows
    assert (match.matched, match.matched_engine) == (1.0, 1.0) and match.counts == (20, 20, 20, 20)
    descriptors = np.random.default_rng(1).standard_normal((1, 20, 8))
    want, have = aligned_rows(descriptors, descriptors[:, order], row_axis(3), match.pairs)
    np.testing.assert_array_equal(want, have)


def test_missing_and_extra_rows_are_judged_both_ways():
    got = np.concatenate([GRID[:, :15], GRID[:, :5] + 100.0], axis=1)  # 5 lost, 5 spurious
    match = match_points(GRID, got, None)
    assert match.matched == 0.75 and match.matched_engine == 0.75
    fewer = match_points(GRID, GRID[:, :10], None)  # fewer rows: a data-dependent output
    assert (fewer.matched, fewer.matched_engine) == (0.5, 1.0)


def test_a_row_whose_own_is_missing_never_borrows_a_neighbour_s():
    ref = np.array([[[0.0, 0.0], [1.0, 0.0], [10.0, 10.0], [20.0, 20.0]]])
    got = ref[:, [0, 2, 3]]  # the row at (1, 0) is lost; (0, 0) is within the radius of it
    match = match_points(ref, got, 1.5)
    assert match.matched == 1.0  # every reference row has an engine row within 1.5 ...
    (rows, engine_rows), = match.pairs
    assert rows.tolist() == [0, 2, 3] and engine_rows.tolist() == [0, 1, 2]  # ... pairs: mutual


def test_index_rows_match_exactly_and_empty_sets_agree():
    matches = np.array([[0, 3], [1, 1], [4, 2]], np.int64)
    assert match_points(matches, matches[::-1], None).radius == 0.0
    assert match_points(matches, matches[::-1], None).matched == 1.0
    shifted = match_points(matches, matches + np.array([0, 1]), None)
    assert shifted.matched == 0.0
    empty = np.zeros((0, 2), np.int64)
    assert match_points(empty, empty, None).matched == 1.0
    assert match_points(empty, matches, None).matched_engine == 0.0
    assert match_points(matches, empty, None).matched == 0.0


def test_rows_that_cannot_be_matched_are_an_error():
    with pytest.raises(ValueError, match="cannot be matched"):
        match_points(GRID, GRID[..., :1], None)
    match = match_points(GRID, GRID, None)
    with pytest.raises(ValueError, match="do not follow"):
        aligned_rows(np.zeros((1, 20, 4)), np.zeros((1, 20, 5)), 1, match.pairs)


def test_argmax_agreement():
    logits = np.random.default_rng(2).standard_normal((1, 6, 5))
    assert argmax_agreement(logits, logits + 1e-3, -1) == 1.0
    flipped = logits.copy()
    flipped[0, 0] = -flipped[0, 0]
    assert argmax_agreement(logits, flipped, -1) == pytest.approx(5 / 6)
    indices = np.array([[1, 2, 3, 4]])
    assert argmax_agreement(indices, np.array([[1, 2, 0, 4]]), -1) == 0.75  # already indices
    with pytest.raises(ValueError, match="shape"):
        argmax_agreement(logits, logits[:, :5], -1)


def _log_sigmoid(path, stable: bool):
    """``x [4, 6] -> scores``: log-sigmoid as -Softplus(-x) (``stable``), or as torch.onnx
    writes it, Log(Sigmoid(x)): -inf in float32 below about -104 (LightGlue's dustbins)."""
    from onnx import TensorProto, checker, helper, save

    nodes = ([helper.make_node("Neg", ["x"], ["nx"]), helper.make_node("Softplus", ["nx"], ["sp"]),
              helper.make_node("Neg", ["sp"], ["scores"])] if stable else
             [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Log", ["s"], ["scores"])])
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 6])]),
        opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9  # what opset 19 needs: any ONNX Runtime of the bases reads it
    checker.check_model(model)
    save(model, str(path))
    return path


def test_only_minus_inf_against_a_finite_value_is_counted():
    from app.verify.measure import figures_of

    inf, nan = np.inf, np.nan
    reference = np.array([1.0, -inf, 2.0, 3.0, 4.0, -inf, nan])
    candidate = np.array([-inf, -inf, nan, inf, 4.0, 5.0, 6.0])
    values = figures_of("y", reference, candidate)
    assert (values.nonfinite, values.nonfinite_model, values.minus_inf) == (5, 2, 2)
    argmax = figures_of("y", reference, candidate, minus_inf_fails=False)
    assert (argmax.nonfinite, argmax.nonfinite_model, argmax.minus_inf) == (3, 1, 0)  # NaN, +inf stay
    ints = figures_of("y", np.array([1, 2]), np.array([1, 2]))  # indices: none
    assert (ints.nonfinite, ints.minus_inf) == (0, 0)


@pytest.mark.parametrize("engine_underflows", [True, False])
@pytest.mark.parametrize("compare", ["values", "argmax"])
def test_minus_inf_against_a_finite_value_fails_values_not_argmax(tmp_path, events, compare,
                                                                  engine_underflows):
    """An assignment whose far tail underflows to -inf in one of the two only (the engine's
    kernels, or the model's): judged by its argmax, the -inf (never a maximum) is not a
    failure; judged as values, it is."""
    from app.backends.onnxruntime.sessions import open_engine
    from app.config_sections import AccuracyConfig, AccuracyOutputConfig
    from app.errors import AccuracyError
    from app.values import InputProfile, PrecisionMode
    from app.verify.accuracy import check_accuracy, enforce
    from tests.verify.models import build_ort

    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        x = rng.uniform(-8, 4, (4, 6)).astype(np.float32)
        x[:, 5] = -120.0  # a dustbin column: log-probability about -120, or -inf
        np.save(samples / f"s{i}.npy", x)
    shapes = {None: InputProfile.fixed((4, 6))}
    engine = build_ort(tmp_path, _log_sigmoid(tmp_path / "engine.onnx", not engine_underflows),
                       "m", PrecisionMode.FP32, shapes=shapes)
    runner = open_engine(engine, "m")
    settings = AccuracyConfig(samples_path=samples,
                              outputs={"scores": AccuracyOutputConfig(compare=compare, axis=-1)})
    try:
        report = check_accuracy(_log_sigmoid(tmp_path / "model.onnx", engine_underflows), runner,
                                model_name="m", precision=PrecisionMode.FP32,
                                input_shapes=shapes, settings=settings)
    finally:
        runner.close()
    [scores] = report.outputs
    if compare == "values":
        assert report.failure is not None and report.failure.metric == "nonfinite"
        assert scores.nonfinite == 12  # 4 rows x 3 samples
        # The hint names where the -inf are and the export or comparison that fits, not the
        # precision: this fp32 engine is as precise as its model.
        with pytest.raises(AccuracyError) as caught:
            enforce(report, events[0])
        side = ("12 non-finite values where the ONNX model's are finite" if engine_underflows else
                "12 non-finite values in the ONNX model's output where the engine's differ")
        assert side in str(caught.value)
        hint = caught.value.hint
        assert "precision" not in hint and "Log(Sigmoid)" in hint and "-Softplus(-x)" in hint
        assert "set accuracy: {outputs: {scores: {compare: argmax}}}" in hint, hint
    else:
        assert report.passed, report.failure
        assert scores.nonfinite == 0 and scores.agreement == 1.0
