"""The gate on real engines: ONNX Runtime builds of the demo corpus, checked against the ONNX
models on ONNX Runtime's CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.base import EngineRunner
from app.backends.onnxruntime.sessions import open_engine
from app.cli import exit_code_for
from app.config_sections import AccuracyConfig
from app.errors import AccuracyError, ModelDataError
from app.values import PrecisionMode
from app.verify.accuracy import check_accuracy, enforce
from app.verify.report import default_tolerance
from tests.verify.models import SHAPES, build_ort, make_embedding, make_masked


def _check(onnx: Path, engine: Path | EngineRunner, name: str, precision: PrecisionMode, **kw):
    runner = open_engine(engine, name) if isinstance(engine, Path) else engine
    try:
        return check_accuracy(onnx, runner, model_name=name, precision=precision,
                              input_shapes=kw.pop("shapes", SHAPES.get(name)), **kw)
    finally:
        runner.close()


@pytest.mark.parametrize("name", ["dinov2_vpr", "lightglue", "aliked"])
def test_fp32_builds_pass_tightly(tmp_path, corpus, name, events):
    engine = build_ort(tmp_path, corpus[name], name, PrecisionMode.FP32)
    report = _check(corpus[name], engine, name, PrecisionMode.FP32, engine_sha256="e", onnx_sha256="o")
    assert report.passed and report.inputs.kind == "random" and report.inputs.count == 4
    [out] = report.outputs
    assert out.rel_l2 < 1e-5 and out.cosine > 0.999999 and out.nonfinite == 0
    assert report.tolerance == default_tolerance("fp32")
    logger, log = events
    assert enforce(report, logger) is report
    [event] = log.kv("c10.engine.accuracy.passed")
    assert event["model_name"] == name and event["outputs"][0]["rel_l2"] == out.rel_l2
    assert report.engine_sha256 == "e" and report.onnx_sha256 == "o"


def test_the_demo_int8_build_passes_the_int8_default(tmp_path, corpus):
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.INT8,
                    corpus["calibration"] / "aliked")
    report = _check(corpus["aliked"], engine, "aliked", PrecisionMode.INT8,
                    calibration_dir=corpus["calibration"] / "aliked")
    assert report.passed, report.failure
    [out] = report.outputs
    assert 1e-4 < out.rel_l2 < default_tolerance("int8").rel_l2  # quantized, yet within bounds
    # The same engine under an FP32-like bound fails: the gate does see INT8's error. (Bounded
    # on max_abs, which INT8's noise floor never exempts: whether rel_l2 is judged at all
    # depends on how far this build's largest error lies from that floor.)
    strict = _check(corpus["aliked"], engine, "aliked", PrecisionMode.INT8,
                    settings=AccuracyConfig(metric="max_abs", threshold=1e-4))
    assert not strict.passed and strict.failure.metric == "max_abs"  # type: ignore[union-attr]
    assert strict.failure.value == out.max_abs  # type: ignore[union-attr]


def test_int8_calibrated_on_constant_batches_fails_the_gate(tmp_path, corpus, events):
    wrong = tmp_path / "calibration"
    wrong.mkdir()
    for i in range(4):
        np.save(wrong / f"batch_{i}.npy", np.zeros((1, 3, 64, 64), np.float32))
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.INT8, wrong)
    report = _check(corpus["aliked"], engine, "aliked", PrecisionMode.INT8, calibration_dir=wrong)
    assert not report.passed
    failure = report.failure
    assert failure is not None and failure.output == "scores" and failure.metric == "rel_l2"
    assert failure.value > 2 * failure.threshold
    logger, log = events
    with pytest.raises(AccuracyError) as caught:
        enforce(report, logger)
    message = str(caught.value)
    for part in ("aliked", "int8", "'scores'", "rel_l2", f"{failure.value:.4g}", "> 0.15",
                 "4 random samples"):
        assert part in message
    assert "\n" not in message and "calibrate" in caught.value.hint
    assert exit_code_for(caught.value) == 70
    [event] = log.kv("c10.engine.accuracy.failed")
    assert (event["output"], event["metric"], event["threshold"]) == ("scores", "rel_l2", 0.15)
    assert event["value"] == failure.value


def test_a_two_input_dynamic_model_with_samples(tmp_path, corpus):
    engine = build_ort(tmp_path, corpus["lightglue"], "lightglue", PrecisionMode.FP32)
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(3)
    for i, (n, m) in enumerate(((40, 300), (1000, 32))):  # anywhere inside the profile
        np.savez(samples / f"s{i}.npz", desc0=rng.standard_normal((1, n, 64)).astype(np.float32),
                 desc1=rng.standard_normal((1, m, 64)).astype(np.float32))
    report = _check(corpus["lightglue"], engine, "lightglue", PrecisionMode.FP32,
                    settings=AccuracyConfig(samples_path=samples))
    assert report.passed and report.inputs.kind == "samples" and report.inputs.count == 2
    assert report.outputs[0].shape == (1, 1000, 32)  # shapes vary per sample; the last is kept


class _Broken:
    """An engine that is wrong in a chosen way, wrapping a real ONNX Runtime engine."""

    def __init__(self, runner: EngineRunner, how: str) -> None:
        self.runner, self.how = runner, how

    def run(self, feeds):
        out = self.runner.run(feeds)
        y = next(iter(out))
        if self.how == "nan":
            out[y] = out[y].copy()
            out[y].flat[3] = np.nan
        elif self.how == "shape":
            out[y] = out[y][..., :-1]
        elif self.how == "missing":
            del out[y]
        elif self.how == "fp16":
            out[y] = out[y].astype(np.float16).astype(np.float32)
        return out

    def close(self) -> None:
        self.runner.close()


@pytest.mark.parametrize(("how", "expect"),
                         [("nan", "nonfinite"), ("shape", "shape"), ("missing", "no output")])
def test_broken_engines_fail(tmp_path, corpus, events, how, expect):
    engine = build_ort(tmp_path, corpus["dinov2_vpr"], "dinov2_vpr", PrecisionMode.FP32)
    runner = _Broken(open_engine(engine), how)
    if how == "nan":
        report = _check(corpus["dinov2_vpr"], runner, "dinov2_vpr", PrecisionMode.FP32)
        assert report.failure is not None and report.failure.metric == expect
        with pytest.raises(AccuracyError,
                           match="4 non-finite values where the ONNX model's are finite") as caught:
            enforce(report, events[0])
        assert caught.value.hint == "check the backend's precision flags"  # NaN from the engine alone
    else:
        with pytest.raises(AccuracyError, match=expect):
            _check(corpus["dinov2_vpr"], runner, "dinov2_vpr", PrecisionMode.FP32)


def test_an_fp32_request_served_in_fp16_is_caught(tmp_path, corpus):
    """A precision flag silently ignored the other way: 'fp32' built as fp16 fails the fp32 bound."""
    engine = build_ort(tmp_path, corpus["dinov2_vpr"], "dinov2_vpr", PrecisionMode.FP32)
    report = _check(corpus["dinov2_vpr"], _Broken(open_engine(engine), "fp16"), "dinov2_vpr",
                    PrecisionMode.FP32)
    assert report.failure is not None and report.failure.metric == "rel_l2"


def test_integer_inputs_need_samples_and_pass_with_them(tmp_path):
    onnx = make_embedding(tmp_path / "emb.onnx")
    engine = build_ort(tmp_path, onnx, "emb", PrecisionMode.FP32, shapes={})
    with pytest.raises(ModelDataError, match="needs sample inputs") as caught:
        _check(onnx, engine, "emb", PrecisionMode.FP32, shapes={})
    assert exit_code_for(caught.value) == 65
    samples = tmp_path / "samples"
    samples.mkdir()
    np.save(samples / "ids.npy", np.array([[0, 9, 3, 3]], np.int64))  # single input: .npy
    report = _check(onnx, engine, "emb", PrecisionMode.FP32, shapes={},
                    settings=AccuracyConfig(samples_path=samples))
    assert report.passed and report.outputs[0].rel_l2 == 0.0


def test_every_output_is_compared(tmp_path):
    onnx = make_masked(tmp_path / "masked.onnx")
    engine = build_ort(tmp_path, onnx, "masked", PrecisionMode.FP32, shapes={})
    report = _check(onnx, engine, "masked", PrecisionMode.FP32, shapes={})
    assert [o.name for o in report.outputs] == ["y", "x_copy"] and report.passed
