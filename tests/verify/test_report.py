"""The gate's report: JSON round trip, the warm path's reuse decision, and its light import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.values import PrecisionMode
from app.verify.report import (
    DEFAULT_TOLERANCES,
    AccuracyReport,
    Failure,
    InputsUsed,
    OutputFigures,
    Tolerance,
    default_tolerance,
)
from tests.helpers import REPO

RANDOM = InputsUsed("random", 4, seed=0, low=0.0, high=1.0)


def _report(failure: Failure | None = None, **kw) -> AccuracyReport:
    outputs = (OutputFigures("scores", (1, 8), 1e-3, 2e-3, 0.99999, 0),
               OutputFigures("logits", (1, 2), float("inf"), float("nan"), 0.5, 3))
    return AccuracyReport("aliked", "int8", default_tolerance("int8"), RANDOM, outputs, failure,
                          engine_sha256="e" * 64, onnx_sha256="o" * 64, duration_s=0.25, **kw)


def test_json_round_trip_keeps_every_figure_including_non_finite_ones():
    report = _report(Failure("logits", "nonfinite", 3.0, 0.0), extras={"note": "x"})
    doc = json.loads(json.dumps(report.to_json(), allow_nan=False))  # strict JSON
    assert doc["passed"] is False and doc["outputs"][1]["max_abs"] == "inf"
    back = AccuracyReport.from_json(doc)
    assert back is not None
    assert back.outputs[0] == report.outputs[0]
    assert back.outputs[1].max_abs == float("inf") and back.outputs[1].nonfinite == 3
    assert back.failure == report.failure and back.tolerance == report.tolerance
    assert back.inputs == RANDOM and back.extras == {"note": "x"}


@pytest.mark.parametrize("doc", [None, [], {}, {"schema": 2}, {"schema": 1, "model_name": "m"},
                                 {**_report().to_json(), "outputs": [{"name": "x"}]},
                                 {**_report().to_json(), "tolerance": "tight"}])
def test_from_json_returns_none_for_anything_else(doc):
    assert AccuracyReport.from_json(doc) is None


def test_a_recorded_pass_covers_the_same_engine_model_and_tolerance_only():
    report = _report()
    same = {"engine_sha256": "e" * 64, "onnx_sha256": "o" * 64, "tolerance": report.tolerance}
    assert report.covers(**same) and report.covers(**same, inputs=RANDOM)
    assert not report.covers(**{**same, "engine_sha256": "f" * 64})
    assert not report.covers(**{**same, "onnx_sha256": "f" * 64})
    assert not report.covers(**{**same, "tolerance": report.tolerance.override("rel_l2", 0.01)})
    assert not report.covers(**same, inputs=InputsUsed("random", 8, seed=0, low=0.0, high=1.0))
    failed = _report(Failure("scores", "rel_l2", 0.5, 0.15))
    assert not failed.covers(**same)


def test_defaults_tighten_with_precision_and_overrides_replace_one_bound():
    fp32, fp16, int8 = (DEFAULT_TOLERANCES[p] for p in PrecisionMode)
    for looser, tighter in ((fp16, fp32), (int8, fp16)):
        assert looser.rel_l2 > tighter.rel_l2 and looser.cosine < tighter.cosine  # type: ignore[operator]
        assert looser.atol > tighter.atol
    custom = int8.override("cosine", 0.999)
    assert custom.cosine == 0.999 and custom.rel_l2 == int8.rel_l2
    with pytest.raises(ValueError, match="unknown accuracy metric 'psnr'"):
        int8.override("psnr", 30)
    assert Tolerance().as_dict() == {"rel_l2": None, "cosine": None, "max_abs": None, "atol": 0.0,
                                     "matched": None, "agreement": None, "variation": None,
                                     "neighbours": None}
    for looser, tighter in ((fp16, fp32), (int8, fp16)):  # the figures of what outputs mean
        assert looser.matched < tighter.matched and looser.agreement < tighter.agreement  # type: ignore[operator]
        assert looser.variation > tighter.variation  # type: ignore[operator]


def test_reading_a_recorded_report_imports_no_heavy_module():
    """What a warm boot does with recorded figures: parse them and decide, with no numpy."""
    code = (
        "import json, sys\n"
        "from app.verify.report import AccuracyReport, default_tolerance\n"
        f"doc = json.loads({json.dumps(json.dumps(_report().to_json()))})\n"
        "r = AccuracyReport.from_json(doc)\n"
        "ok = r.covers(engine_sha256='e'*64, onnx_sha256='o'*64, tolerance=default_tolerance('int8'))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'numpy','onnx','onnxruntime'})\n"
        "print(json.dumps([ok, heavy]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert json.loads(out.stdout) == [True, []]


def test_a_record_of_the_first_schema_is_checked_again_never_read_as_a_pass():
    old = {**_report().to_json(), "schema": 1}
    for key in ("outputs_config",):
        old.pop(key)
    old["outputs"] = [{k: o[k] for k in ("name", "shape", "max_abs", "rel_l2", "cosine",
                                         "nonfinite")} for o in old["outputs"]]
    assert AccuracyReport.from_json(old) is None


def test_set_figures_round_trip_and_the_configured_comparisons_are_covered():
    points = OutputFigures("keypoints", (1, 48, 2), 0.1, 0.01, 0.9999, compare="points",
                           matched=0.98, matched_engine=0.97, radius=1.04, note="rows ordered by TopK")
    report = AccuracyReport("aliked", "fp16", default_tolerance("fp16"), RANDOM, (points,),
                            engine_sha256="e" * 64, onnx_sha256="o" * 64,
                            outputs_config={"keypoints": {"compare": "points", "radius": 2.0}})
    back = AccuracyReport.from_json(json.loads(json.dumps(report.to_json())))
    assert back is not None and back.outputs == (points,)
    same = {"engine_sha256": "e" * 64, "onnx_sha256": "o" * 64, "tolerance": report.tolerance}
    assert back.covers(**same, outputs_config={"keypoints": {"compare": "points", "radius": 2.0}})
    assert not back.covers(**same, outputs_config={})
    assert not back.covers(**same, outputs_config={"keypoints": {"compare": "points",
                                                                 "radius": 1.0}})
