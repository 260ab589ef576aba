"""The gate on networks built like the robot's (tests/verify/networks.py), with default settings
and no ``outputs:`` block: real ONNX Runtime builds in fp32, fp16 and int8, seeded random
inputs and real photographs (tests/verify/photos.py), against the ONNX models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.onnxruntime.sessions import open_engine
from app.config_sections import AccuracyConfig
from app.config_sections import AccuracyOutputConfig as Rule
from app.errors import AccuracyError
from app.values import PrecisionMode
from app.verify.accuracy import check_accuracy, enforce
from app.verify.report import default_tolerance
from tests.verify import networks as nets
from tests.verify.models import build_ort
from tests.verify.photos import make_samples, write_photos

FP32, FP16, INT8 = PrecisionMode.FP32, PrecisionMode.FP16, PrecisionMode.INT8
INPUT = {"aliked": ("image", 32), "dinov2": ("pixels", 56)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("networks")
    paths = {"aliked": nets.make_aliked(root / "aliked.onnx"),
             "dinov2": nets.make_dinov2(root / "dinov2.onnx"),
             "lightglue": nets.make_lightglue(root / "lightglue.onnx", matches=True),
             "near": nets.make_aliked(root / "near.onnx", spread=3e-5),
             "near_split": nets.make_aliked(root / "near_split.onnx", spread=3e-5, split_bias=True)}
    photos = write_photos(root / "photos")
    others = write_photos(root / "mirrored", mirrored=True)
    for name, (tensor, side) in INPUT.items():
        paths[f"{name}_photos"] = make_samples(photos, root / f"{name}_photos", tensor, side)
        calibration = make_samples(others, root / f"{name}_calibration", tensor, side)
        paths[f"{name}_calibration"] = calibration
        grey = root / f"{name}_grey"
        grey.mkdir()
        for i in range(2):  # the wrong calibration: a constant grey image
            np.save(grey / f"grey_{i}.npy", np.full((1, 3, side, side), 0.5, np.float32))
        paths[f"{name}_grey"] = grey
    paths["lightglue_pairs"] = nets.write_pairs(root / "pairs", 4, seed=1)
    paths["lightglue_calibration"] = nets.write_pairs(root / "pairs_calibration", 3, seed=2)
    grey = root / "lightglue_grey"
    grey.mkdir()
    np.savez(grey / "grey.npz", desc0=np.full((1, 24, 16), 0.5, np.float32),
             desc1=np.full((1, 24, 16), 0.5, np.float32))
    paths["lightglue_grey"] = grey
    return paths


def _check(built, name: str, precision: PrecisionMode, tmp_path: Path, *, engine_from=None,
           calibration: str | None = None, samples: str | None = None, outputs=None):
    onnx = built["near" if name == "near" else name]
    source = built[engine_from] if engine_from else onnx
    shapes = nets.SHAPES["aliked" if name == "near" else name]
    engine = build_ort(tmp_path, source, name, precision,
                       built[calibration] if calibration else None, shapes=shapes)
    settings = AccuracyConfig(samples_path=built[samples] if samples else None,
                              outputs=outputs or {})
    runner = open_engine(engine, name)
    try:
        return check_accuracy(onnx, runner, model_name=name, precision=precision,
                              input_shapes=shapes, settings=settings,
                              calibration_dir=built[calibration] if calibration else None)
    finally:
        runner.close()


def test_a_healthy_fp32_engine_that_reorders_near_equal_keypoints_passes(built, tmp_path, events):
    """The ALIKED failure: an engine whose kernels round otherwise (its graph adds the score
    bias in two steps) reorders the top-k among near-equal scores; compared as a set, found
    by reading the graph, it passes."""
    report = _check(built, "near", FP32, tmp_path, engine_from="near_split")
    assert report.passed, report.failure
    keypoints, scores, descriptors = report.outputs
    assert keypoints.compare == "points" and "TopK" in keypoints.note
    assert keypoints.matched is not None and keypoints.matched >= 0.95
    assert (scores.compare, descriptors.compare) == ("aligned", "aligned")
    assert descriptors.rel_l2 < 1e-5  # the matched keypoints' descriptors are the same
    enforce(report, events[0])
    [event] = events[1].kv("c10.engine.accuracy.passed")
    assert "compared as a set" in event["outputs"][0]["note"]
    # Compared elementwise (the gate before it read the graph), the same engine fails.
    values = {n: Rule(compare="values") for n in ("keypoints", "scores", "descriptors")}
    elementwise = _check(built, "near", FP32, tmp_path, engine_from="near_split", outputs=values)
    assert elementwise.failure is not None and elementwise.failure.output == "keypoints"
    assert elementwise.failure.metric == "rel_l2" and elementwise.failure.value > 0.1


@pytest.mark.parametrize("precision", [FP32, FP16])
@pytest.mark.parametrize(("name", "samples"), [("aliked", None), ("aliked", "aliked_photos"),
                                               ("dinov2", None), ("dinov2", "dinov2_photos"),
                                               ("lightglue", None),
                                               ("lightglue", "lightglue_pairs")])
def test_healthy_engines_pass_with_default_settings(built, tmp_path, name, samples, precision):
    """fp16 here: ONNX Runtime's fp16 conversion (fp16 weights, casts; its x86 CPU kernels
    compute in fp32, which `engine-init run` refuses through its precision check), the rounding
    of half precision without its kernels."""
    report = _check(built, name, precision, tmp_path, samples=samples)
    assert report.passed, report.failure
    assert report.tolerance == default_tolerance(precision)
    compare = {o.name: o.compare for o in report.outputs}
    if name == "aliked":
        assert compare == {"keypoints": "points", "scores": "aligned", "descriptors": "aligned"}
    if name == "lightglue":
        assert compare == {"scores": "values", "matches": "points"}
        matches = report.outputs[1]
        assert matches.radius == 0.0  # indices: exact
    if samples == "lightglue_pairs":
        assert report.outputs[1].shape[0] > 0  # the pairs do match


def test_healthy_int8_engines_calibrated_on_other_frames_pass(built, tmp_path):
    for name in ("aliked", "dinov2"):
        report = _check(built, name, INT8, tmp_path, calibration=f"{name}_calibration",
                        samples=f"{name}_photos")
        assert report.passed, (name, report.failure)


@pytest.mark.parametrize(("name", "figure"), [("aliked", "matched"), ("dinov2", "variation")])
def test_int8_calibrated_on_a_constant_image_fails(built, tmp_path, events, name, figure):
    report = _check(built, name, INT8, tmp_path, calibration=f"{name}_grey",
                    samples=f"{name}_photos")
    assert report.failure is not None and report.failure.metric == figure, report.failure
    if name == "dinov2":  # what the gate missed when it judged errors against the norm only
        [descriptor] = report.outputs
        bounds = default_tolerance(INT8)
        assert descriptor.rel_l2 <= bounds.rel_l2 and descriptor.cosine >= bounds.cosine  # type: ignore[operator]
    with pytest.raises(AccuracyError) as caught:
        enforce(report, events[0])
    assert (f"in {name}'s backbones entry, set accuracy: {{outputs: "
            f"{{{report.failure.output}: {{metric: {figure}, threshold: ") in caught.value.hint


def test_lightglue_int8_calibrated_on_constants_fails(built, tmp_path):
    report = _check(built, "lightglue", INT8, tmp_path, calibration="lightglue_grey",
                    samples="lightglue_pairs")
    assert report.failure is not None, report.outputs


@pytest.mark.parametrize(("name", "samples"), [("aliked", "aliked_photos"),
                                               ("dinov2", "dinov2_photos"),
                                               ("lightglue", "lightglue_pairs")])
def test_an_engine_with_one_weight_changed_fails(built, tmp_path, name, samples):
    bad = nets.corrupt(built[name], tmp_path / f"{name}_bad.onnx")
    built_bad = {**built, "bad": bad}
    report = _check(built_bad, name, FP32, tmp_path, engine_from="bad", samples=samples)
    assert report.failure is not None


def test_a_matcher_s_assignment_judged_by_argmax_and_an_output_skipped(built, tmp_path, events):
    outputs = {"scores": Rule(compare="argmax", axis=-1),
               "matches": Rule(compare="skip", reason="the robot recomputes matches")}
    report = _check(built, "lightglue", FP16, tmp_path, samples="lightglue_pairs",
                    outputs=outputs)
    assert report.passed, report.failure
    scores, matches = report.outputs
    assert scores.compare == "argmax" and scores.agreement == 1.0
    assert matches.compare == "skip" and matches.note == "the robot recomputes matches"
    enforce(report, events[0])
    [event] = events[1].kv("c10.engine.accuracy.passed")
    assert event["outputs"][1]["note"] == "the robot recomputes matches"
    assert "matches skipped (the robot recomputes matches)" in events[1].of(
        "c10.engine.accuracy.passed")[0].getMessage()
    built_bad = {**built, "bad": nets.corrupt(built["lightglue"], tmp_path / "bad.onnx")}
    bad = _check(built_bad, "lightglue", FP32, tmp_path, engine_from="bad",
                 samples="lightglue_pairs", outputs=outputs)
    assert bad.failure is not None and bad.failure.metric == "agreement"
