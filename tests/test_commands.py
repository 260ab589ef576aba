"""validate, status, verify, prune and wait-ready (app/commands/__init__.py), through real processes."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from tests.helpers import cli


def test_validate_ok_and_bad(tmp_path, job):
    ok = cli("--config", str(job), "validate")
    assert ok.returncode == 0 and "config OK: 3 model(s)" in ok.stdout
    doc = yaml.safe_load(job.read_text())
    doc["workspace_mb"] = 0
    job.write_text(yaml.safe_dump(doc))
    bad = cli("--config", str(job), "validate")
    assert bad.returncode == 78
    assert "workspace_mb" in bad.stderr and "Traceback" not in bad.stderr
    debug = cli("--config", str(job), "--debug", "validate")
    assert debug.returncode == 78 and "Traceback" in debug.stderr


def test_status_and_verify(tmp_path, job):
    assert cli("--config", str(job), "run").returncode == 0
    table = cli("--config", str(job), "status")
    assert table.returncode == 0 and table.stdout.count("ready") == 3
    doc = json.loads(cli("--config", str(job), "status", "--json").stdout)
    assert [e["reusable"] for e in doc["engines"]] == [True] * 3
    # This machine's SKU key, as the fleet artifact would be tagged (app/host/identity.py): its
    # CPU's architecture, or with a GPU its compute capability, SM count and memory.
    host = r"(cpu-[a-z0-9_]+|sm\d+-\d+sm-\d+g)"
    assert re.fullmatch(host + r"-jpnone-ort\d+\.\d+\.\d+-onnxruntime", doc["sku"]), doc["sku"]
    assert table.stdout.splitlines()[0] == f"SKU {doc['sku']}"
    assert cli("--config", str(job), "verify").returncode == 0
    engine = doc["engines"][0]["engine_path"]
    with open(engine, "r+b") as handle:
        handle.write(b"X")
    bad = cli("--config", str(job), "verify")
    assert bad.returncode == 65 and "dinov2_vpr" in bad.stderr


def test_prune_removes_only_other_hosts_files(tmp_path, job):
    assert cli("--config", str(job), "run").returncode == 0
    cache = tmp_path / "cache"
    foreign = ["dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine",
               "dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine.sha256",
               "dinov2_vpr__ort0.1_x86_64-00000000_fp32.ort"]
    for name in [*foreign, "notes.txt"]:
        (cache / name).write_text("x")
    # Folders under a stale artifact's names may hold someone's data: kept.
    kept = cache / "dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine.record.json"
    kept.mkdir()
    (kept / "data.txt").write_text("mine")
    (cache / "aliked__sm72_jp5.1_trt8.5_fp16.engine").mkdir()
    before = sorted(os.listdir(cache))
    dry = cli("--config", str(job), "prune", "--dry-run")
    assert dry.returncode == 0 and "would remove 3 file(s)" in dry.stdout
    assert sorted(os.listdir(cache)) == before
    real = cli("--config", str(job), "prune")
    assert real.returncode == 0 and "removed 3 file(s)" in real.stdout
    assert not set(foreign) & set(os.listdir(cache)) and "notes.txt" in os.listdir(cache)
    assert (kept / "data.txt").read_text() == "mine"
    assert (cache / "aliked__sm72_jp5.1_trt8.5_fp16.engine").is_dir()
    assert cli("--config", str(job), "verify").returncode == 0


def test_wait_ready(tmp_path, job):
    early = cli("--config", str(job), "wait-ready", "--timeout", "0.3")
    assert early.returncode == 75 and "no readiness marker" in early.stderr
    assert cli("--config", str(job), "run").returncode == 0
    ok = cli("--config", str(job), "wait-ready", "--timeout", "5", "--verify")
    assert ok.returncode == 0 and "3 engine(s)" in ok.stdout
    marker = tmp_path / "run" / "ready.json"
    doc = json.loads(marker.read_text())
    doc["boot_id"] = "another-boot"
    marker.write_text(json.dumps(doc))
    stale = cli("--config", str(job), "wait-ready", "--timeout", "0.3")
    assert stale.returncode == 75 and "not this boot" in stale.stderr


def test_a_cpu_only_config_logs_why_no_gpu_was_probed_at_debug_only(job):
    """backend: onnxruntime needs no GPU: the probe's reason for finding none is no problem of
    this run's (INFO stays quiet about it); backend auto might have used one, so it says why."""
    from tests.helpers import json_events, real_gpu_available

    if real_gpu_available():
        pytest.skip("a GPU is there: nothing to explain")
    quiet = cli("--config", str(job), "--log-format", "json", "status")
    assert quiet.returncode == 0, quiet.stderr
    [probed] = [e for e in json_events(quiet.stderr) if e["kind"] == "c10.host.probed"]
    assert probed["kv"]["gpu_error"] is None
    assert not [e for e in json_events(quiet.stderr) if e["kind"] == "c10.host.gpu.unused"]
    debug = cli("--config", str(job), "--log-format", "json", "--debug", "status")
    [unused] = [e for e in json_events(debug.stderr) if e["kind"] == "c10.host.gpu.unused"]
    assert unused["level"] == "DEBUG" and unused["kv"]["gpu_error"]
    auto = cli("--config", str(job), "--log-format", "json", "status",
               env={"ENGINE_INIT_BACKEND": "auto"})
    assert auto.returncode == 0, auto.stderr
    [probed] = [e for e in json_events(auto.stderr) if e["kind"] == "c10.host.probed"]
    assert probed["level"] == "INFO" and probed["kv"]["gpu_error"]
