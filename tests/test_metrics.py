"""The metrics textfile, written by real ``engine-init run`` processes and read back with
prometheus_client's own exposition parser (as node_exporter's textfile collector would)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import cli, json_events, popen_cli, wait_for_build, write_job_config


def _read(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}``."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _outcomes(metrics: dict) -> dict[str, str]:
    """Each model's outcome, checking that exactly one of its four states is 1."""
    states: dict[str, list[str]] = {}
    for labels, value in metrics.get("engine_init_model_outcome", {}).items():
        d = dict(labels)
        states.setdefault(d["model"], [])
        assert value in (0.0, 1.0)
        if value:
            states[d["model"]].append(d["outcome"])
    for model, on in states.items():
        assert len(on) == 1, (model, on)
    assert all(
        sorted(dict(k)["outcome"] for k in metrics["engine_init_model_outcome"] if dict(k)["model"] == m)
        == ["built", "failed", "promoted", "reused"] for m in states)
    return {m: on[0] for m, on in states.items()}


def _per_model(metrics: dict, name: str) -> dict[str, float]:
    return {dict(k)["model"]: v for k, v in metrics.get(name, {}).items()}


def test_cold_then_warm_run(tmp_path, corpus):
    prom = tmp_path / "textfile" / "engine_init.prom"
    prom.parent.mkdir()
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom))

    before = time.time()
    assert cli("--config", str(job), "run").returncode == 0
    cold = _read(prom)
    marker = json.loads((tmp_path / "run" / "ready.json").read_text())
    assert cold["engine_init_run_exit_code"] == {(): 0.0}
    assert before <= cold["engine_init_run_timestamp_seconds"][()] <= time.time()
    assert _outcomes(cold) == {"dinov2_vpr": "built", "lightglue": "built", "aliked": "built"}
    built_s = _per_model(cold, "engine_init_model_build_seconds")
    assert built_s == pytest.approx(  # the build event rounds to 0.1 ms
        {e["model_name"]: e["compile_duration_s"] for e in marker["engines"]}, abs=6e-5)
    assert _per_model(cold, "engine_init_model_engine_bytes") == {
        e["model_name"]: os.stat(e["engine_path"]).st_size for e in marker["engines"]}
    phases = {dict(k)["phase"]: v for k, v in cold["engine_init_phase_seconds"].items()}
    # The marker's own write is timed after it is written: in the metrics, not in the marker.
    assert phases.pop("marker") > 0
    assert phases == pytest.approx(marker["phase_timings_s"], abs=6e-5)  # the marker rounds
    assert cold["engine_init_run_duration_seconds"][()] >= sum(phases.values())
    (info,) = cold["engine_init_host_info"]
    assert dict(info)["backend"] == "onnxruntime"

    assert cli("--config", str(job), "run").returncode == 0
    warm = _read(prom)
    assert _outcomes(warm) == dict.fromkeys(("dinov2_vpr", "lightglue", "aliked"), "reused")
    assert "engine_init_model_build_seconds" not in warm  # nothing was built
    assert _per_model(warm, "engine_init_model_engine_bytes") == _per_model(
        cold, "engine_init_model_engine_bytes")
    assert warm["engine_init_run_timestamp_seconds"][()] >= cold["engine_init_run_timestamp_seconds"][()]
    assert sorted(p.name for p in prom.parent.iterdir()) == ["engine_init.prom"]  # no temp left


def test_a_model_that_fails_mid_corpus(tmp_path, corpus):
    """The first model is built, the second is random bytes (exit 65): both are reported."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(os.urandom(4096))
    prom = tmp_path / "engine_init.prom"
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom))
    doc = yaml.safe_load(job.read_text())
    doc["backbones"] = [doc["backbones"][0],
                        {"model_name": "broken", "onnx_path": str(broken),
                         "expected_input_shape": [1, 3, 32, 32]},
                        doc["backbones"][2]]
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 65, result.stderr[-800:]
    metrics = _read(prom)
    assert metrics["engine_init_run_exit_code"] == {(): 65.0}
    assert _outcomes(metrics) == {"dinov2_vpr": "built", "broken": "failed"}  # aliked: not reached
    assert set(_per_model(metrics, "engine_init_model_engine_bytes")) == {"dinov2_vpr"}
    phases = {dict(k)["phase"] for k in metrics["engine_init_phase_seconds"]}
    assert {"startup", "config", "probe", "verify", "compile"} <= phases


def test_a_config_error_is_reported_from_the_file_and_the_environment(tmp_path, corpus):
    prom = tmp_path / "engine_init.prom"
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom), workspace_mb=-1)
    assert cli("--config", str(job), "run").returncode == 78
    assert _read(prom)["engine_init_run_exit_code"] == {(): 78.0}
    assert "engine_init_model_outcome" not in _read(prom)

    other = tmp_path / "from_env.prom"
    job = write_job_config(tmp_path, corpus, workspace_mb=-1)
    env = {"ENGINE_INIT_METRICS_TEXTFILE": str(other)}
    assert cli("--config", str(job), "run", env=env).returncode == 78
    assert _read(other)["engine_init_run_exit_code"] == {(): 78.0}


def test_sigterm_during_a_build_is_reported_as_143(tmp_path, corpus):
    prom = tmp_path / "engine_init.prom"
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom))
    proc = popen_cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": "slow_build_s=60"})
    wait_for_build(job)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 143, stderr[-800:]
    assert _read(prom)["engine_init_run_exit_code"] == {(): 143.0}


def test_metrics_off_by_default_and_a_bad_key_is_a_config_error(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    assert cli("--config", str(job), "run").returncode == 0
    assert not list(tmp_path.rglob("*.prom"))
    bad = write_job_config(tmp_path, corpus, metrics_textfile=str(tmp_path / "metrics.txt"))
    result = cli("--config", str(bad), "validate")
    assert result.returncode == 78 and "metrics_textfile" in result.stderr
    assert not (tmp_path / "metrics.txt").exists()


def test_an_unwritable_textfile_is_a_warning_not_a_failure(tmp_path, corpus):
    prom = tmp_path / "no-such-folder" / "engine_init.prom"
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom))
    result = cli("--config", str(job), "run")
    assert result.returncode == 0, result.stderr[-800:]
    (warning,) = [e for e in json_events(result.stderr) if e["kind"] == "c10.metrics.unwritten"]
    assert warning["level"] == "WARNING" and str(prom) in warning["msg"]
    assert not prom.parent.exists()


def test_a_planted_symlink_is_replaced_not_followed(tmp_path, corpus):
    victim = tmp_path / "victim.txt"
    victim.write_text("not the job's\n")
    prom = tmp_path / "engine_init.prom"
    prom.symlink_to(victim)
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(prom))
    assert cli("--config", str(job), "run").returncode == 0
    assert victim.read_text() == "not the job's\n"
    assert not prom.is_symlink() and _read(prom)["engine_init_run_exit_code"] == {(): 0.0}
