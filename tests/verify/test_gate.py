"""The accuracy gate through `engine-init run`: real ONNX models, real ONNX Runtime builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from app.cache.record import read_record
from tests.helpers import cli, json_events, write_job_config


def _kinds(proc, kind):
    return [e["kv"] for e in json_events(proc.stderr) if e["kind"] == kind]


def test_fp32_build_passes_records_figures_and_a_warm_boot_skips_the_check(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 2, "seed": 3})
    cold = cli("--config", str(job), "--log-format", "json", "run")
    assert cold.returncode == 0, cold.stderr
    passed = _kinds(cold, "c10.engine.accuracy.passed")
    assert sorted(e["model_name"] for e in passed) == ["aliked", "dinov2_vpr", "lightglue"]
    dino = next(e for e in passed if e["model_name"] == "dinov2_vpr")
    assert dino["precision"] == "fp32" and dino["samples"] == 2
    assert all(o["rel_l2"] <= 1e-4 for o in dino["outputs"])
    engine = next((tmp_path / "cache").glob("dinov2_vpr*.ort"))
    recorded = read_record(engine).record
    assert recorded is not None and recorded.accuracy is not None
    assert recorded.accuracy["passed"] and recorded.accuracy["inputs"]["seed"] == 3
    marker = json.loads((tmp_path / "run" / "ready.json").read_text())
    item = next(e for e in marker["engines"] if e["model_name"] == "dinov2_vpr")
    assert item["accuracy"]["engine_sha256"] == item["sha256"]

    warm = cli("--config", str(job), "--log-format", "json", "run")
    assert warm.returncode == 0, warm.stderr
    assert _kinds(warm, "c10.engine.accuracy.passed") == []
    assert all(e["outcome"] == "reused" and "accuracy" in e
               for e in json.loads((tmp_path / "run" / "ready.json").read_text())["engines"])

    # A new tolerance is a new check of the same engine, not a rebuild.
    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 2, "seed": 3, "metric": "cosine",
                                     "threshold": 0.999})
    again = cli("--config", str(job), "--log-format", "json", "run")
    assert again.returncode == 0, again.stderr
    assert len(_kinds(again, "c10.engine.accuracy.passed")) == 3
    assert _kinds(again, "c10.engine.built") == []


def test_int8_calibrated_on_zeros_fails_with_exit_70_and_publishes_nothing(tmp_path, corpus):
    calibration = tmp_path / "calibration"
    shutil.copytree(corpus["calibration"], calibration)
    for batch in (calibration / "aliked").glob("*.npy"):
        np.save(batch, np.zeros((1, 3, 64, 64), np.float32))
    job = write_job_config(tmp_path, corpus, calibration_path=str(calibration))
    doc = job.read_text().replace("precision: int8", "precision: int8\n  verify: accuracy")
    job.write_text(doc)
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 70, proc.stderr
    failed = _kinds(proc, "c10.engine.accuracy.failed")
    assert len(failed) == 1 and failed[0]["model_name"] == "aliked"
    error = [line for line in proc.stderr.splitlines() if line.startswith("engine-init: error:")]
    assert len(error) == 1 and "aliked" in error[0], proc.stderr
    kv = failed[0]
    assert f"output {kv['output']!r}: {kv['metric']} {kv['value']:.4g} >" in error[0]
    assert f"{kv['threshold']:g}" in error[0]
    assert "Traceback" not in proc.stderr
    cache = tmp_path / "cache"
    assert list(cache.glob("aliked*")) == []  # engine, sidecar and pending record: gone
    assert list(cache.glob("dinov2_vpr*.ort"))  # the models before it stay built
    [summary] = _kinds(proc, "c10.engine.compile.summary")  # and are counted
    assert (summary["engines_built"], summary["stopped_at"]) == (2, "aliked")
    # The hint points at comparing the failing output otherwise, not at the model's tolerance.
    assert (f"in aliked's backbones entry, set accuracy: {{outputs: {{{kv['output']}: "
            "{compare: points}}}" in error[0])
    assert "accuracy.metric/threshold" not in error[0]
    assert not (tmp_path / "run" / "ready.json").exists()
    # The next run rebuilds (and fails again on the same wrong calibration).
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 70
    assert [e["model_name"] for e in _kinds(proc, "c10.engine.compile.start")] == ["aliked"]


def test_per_model_accuracy_keys_override_the_job_wide_ones(tmp_path, corpus):
    from app.config import BackboneSpec
    from app.loading import load_config

    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 2, "seed": 5})
    text = job.read_text().replace(
        "model_name: lightglue", "model_name: lightglue\n  accuracy: {seed: 9}\n  verify: io")
    job.write_text(text)
    config = load_config(Path(job), env={})
    specs = {b.model_name: BackboneSpec.from_config(b, config.verify, config.accuracy)
             for b in config.backbones}
    assert specs["dinov2_vpr"].verify == "accuracy"
    assert specs["dinov2_vpr"].accuracy is not None and specs["dinov2_vpr"].accuracy.seed == 5
    assert specs["lightglue"].verify == "io" and specs["lightglue"].accuracy is None


def test_a_reused_engine_failing_a_tighter_tolerance_is_exit_70_and_left_in_place(tmp_path,
                                                                                  corpus):
    job = write_job_config(tmp_path, corpus, verify="accuracy", accuracy={"random_samples": 1})
    assert cli("--config", str(job), "run").returncode == 0
    engine = next((tmp_path / "cache").glob("dinov2_vpr*.ort"))
    before = engine.read_bytes()
    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 1, "metric": "max_abs", "threshold": 1e-12})
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 70, proc.stderr
    assert [e["model_name"] for e in _kinds(proc, "c10.engine.accuracy.failed")] == ["dinov2_vpr"]
    assert _kinds(proc, "c10.engine.compile.start") == []
    assert engine.read_bytes() == before and not (tmp_path / "run" / "ready.json").exists()


def test_per_output_comparisons_are_recorded_and_a_change_checks_again(tmp_path, corpus):
    outputs = {"scores": {"compare": "argmax", "axis": -1}}
    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 2, "outputs": outputs})
    cold = cli("--config", str(job), "--log-format", "json", "run")
    assert cold.returncode == 0, cold.stderr
    passed = {e["model_name"]: e for e in _kinds(cold, "c10.engine.accuracy.passed")}
    [lightglue] = passed["lightglue"]["outputs"]  # the job-wide entry, where the output exists
    assert lightglue["compare"] == "argmax" and lightglue["agreement"] == 1.0
    assert passed["dinov2_vpr"]["outputs"][0]["compare"] == "values"
    job = write_job_config(tmp_path, corpus, verify="accuracy", accuracy={"random_samples": 2})
    again = cli("--config", str(job), "--log-format", "json", "run")
    assert again.returncode == 0, again.stderr
    rechecked = {e["model_name"]: e for e in _kinds(again, "c10.engine.accuracy.passed")}
    assert set(rechecked) == {"dinov2_vpr", "lightglue", "aliked"}  # the records: the old rules
    assert rechecked["lightglue"]["outputs"][0]["compare"] == "values"
    recorded = read_record(next((tmp_path / "cache").glob("lightglue*.ort"))).record
    assert recorded is not None and recorded.accuracy is not None
    assert recorded.accuracy["schema"] == 2 and recorded.accuracy["outputs_config"] == {}
    assert _kinds(again, "c10.engine.built") == []


def test_networks_like_the_robot_s_pass_with_no_outputs_block(tmp_path):
    """`engine-init run`, verify: accuracy, default settings: the ALIKED-like keypoints are
    compared as a set because the graph says so, and every engine is ready."""
    import yaml

    from tests.verify import networks as nets

    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "run").mkdir()
    doc = {"cache_root": str(tmp_path / "cache"), "readiness_marker": str(tmp_path / "run" / "r.json"),
           "backend": "onnxruntime", "precision": "fp32", "verify": "accuracy",
           "lock_timeout_s": 60, "backbones": [
               {"model_name": "dinov2", "onnx_path": str(nets.make_dinov2(models / "d.onnx")),
                "expected_input_shape": [1, 3, 56, 56]},
               {"model_name": "lightglue", "onnx_path": str(nets.make_lightglue(
                   models / "l.onnx", matches=True)), "input_shapes": {
                   k: {"min": [1, 8, 16], "opt": [1, 24, 16], "max": [1, 64, 16]}
                   for k in ("desc0", "desc1")}},
               {"model_name": "aliked", "onnx_path": str(nets.make_aliked(models / "a.onnx")),
                "expected_input_shape": [1, 3, 32, 32]}]}
    job = tmp_path / "config.yaml"
    job.write_text(yaml.safe_dump(doc))
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 0, proc.stderr
    passed = {e["model_name"]: e for e in _kinds(proc, "c10.engine.accuracy.passed")}
    assert [o["compare"] for o in passed["aliked"]["outputs"]] == ["points", "aligned", "aligned"]
    assert "TopK" in passed["aliked"]["outputs"][0]["note"]
    assert [o["compare"] for o in passed["lightglue"]["outputs"]] == ["values", "points"]
    assert passed["dinov2"]["outputs"][0]["neighbours"] == 1.0
