"""Every CLI command and exit code, through real processes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, json_events, write_job_config


@pytest.fixture
def job(tmp_path, corpus):
    return write_job_config(tmp_path, corpus)


def test_run_builds_then_reuses_and_writes_the_marker(tmp_path, job):
    first = cli("--config", str(job), "run")
    assert first.returncode == 0, first.stderr
    assert "3 built, 0 reused" in first.stdout
    kinds = [e["kind"] for e in json_events(first.stderr)]
    assert kinds.count("c10.engine.cache.miss") == 3 and "c10.marker.written" in kinds
    second = cli("--config", str(job), "run")
    assert second.returncode == 0 and "0 built, 3 reused" in second.stdout
    marker = json.loads((tmp_path / "run" / "ready.json").read_text())
    assert marker["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert marker["backend"] == "onnxruntime" and marker["backend_version"]
    assert [e["outcome"] for e in marker["engines"]] == ["reused"] * 3
    assert {e["model_name"] for e in marker["engines"]} == {"dinov2_vpr", "lightglue", "aliked"}
    for engine in marker["engines"]:
        assert os.path.isfile(engine["engine_path"]) and len(engine["sha256"]) == 64
    assert set(marker["phase_timings_s"]) >= {"config", "probe", "verify", "compile"}
    [written] = [e for e in json_events(second.stderr) if e["kind"] == "c10.marker.written"]
    assert set(written["kv"]["phase_timings_s"]) >= {"config", "probe", "verify", "marker"}


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
    # This CPU machine's SKU key, as the fleet artifact would be tagged (app/host/identity.py).
    assert re.fullmatch(r"cpu-[a-z0-9_]+-jpnone-ort\d+\.\d+\.\d+-onnxruntime", doc["sku"])
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


def test_schema_and_help(job):
    schema = cli("schema")
    assert schema.returncode == 0 and "backbones" in json.loads(schema.stdout)["properties"]
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("run", "validate", "status", "verify", "prune", "wait-ready", "schema"):
        assert command in helped.stdout


def test_usage_error_is_2():
    result = cli("no-such-command")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_missing_model_is_78_and_leaves_no_marker(tmp_path, job):
    assert cli("--config", str(job), "run").returncode == 0
    doc = yaml.safe_load(job.read_text())
    doc["backbones"][0]["onnx_path"] = str(tmp_path / "gone.onnx")
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 78 and "gone.onnx" in result.stderr
    assert not (tmp_path / "run" / "ready.json").exists()


def test_build_failure_is_70_and_bad_model_data_is_65(tmp_path, job, corpus):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(corpus["aliked"].read_bytes()[:200])
    doc = yaml.safe_load(job.read_text())
    doc["backbones"][2]["onnx_path"] = str(broken)
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 65 and "broken.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    failed = [e for e in json_events(result.stderr) if e["kind"] == "c10.run.failed"]
    assert failed and failed[0]["kv"]["exit_code"] == 65


def test_a_compile_error_names_the_configured_calibration_path(tmp_path, corpus):
    """Log consumers match c10.engine.compile.error on the calibration_path of the config; the
    model's own batch folder is calibration_dir."""
    calib = tmp_path / "calib"
    (calib / "aliked").mkdir(parents=True)
    import numpy as np

    np.save(calib / "aliked" / "batch0.npy", np.zeros((1, 3, 9, 9), dtype="float32"))  # bad shape
    job = write_job_config(tmp_path, corpus, calibration_path=str(calib))
    result = cli("--config", str(job), "run")
    assert result.returncode == 65, result.stderr[-800:]
    [error] = [e for e in json_events(result.stderr) if e["kind"] == "c10.engine.compile.error"]
    assert error["kv"]["model_name"] == "aliked"
    assert error["kv"]["calibration_path"] == str(calib)
    assert error["kv"]["calibration_dir"] == str(calib / "aliked")


def test_exit_codes_by_name_are_the_documented_numbers():
    from app import errors
    from app.cli import EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, exit_code_for

    documented = [(errors.ConfigError("x"), 78), (errors.ModelDataError("x"), 65),
                  (errors.BackendUnavailableError("x"), 69), (errors.EngineBuildError("x"), 70),
                  (errors.CacheWriteError("x"), 73), (errors.DiskFullError("x"), 74),
                  (errors.LockTimeoutError("x"), 75), (errors.MarkerError("x"), 75),
                  (errors.BuildCancelledError(2), 130), (errors.BuildCancelledError(15), 143),
                  (RuntimeError("x"), 70)]
    assert [exit_code_for(exc) for exc, _ in documented] == [code for _, code in documented]
    assert (EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM) == (2, 130, 143)


def test_only_a_process_that_main_owns_skips_the_final_collections(job):
    """gc.freeze() is for the process's exit; an in-process caller keeps a normal heap."""
    import gc
    import subprocess
    import sys

    from app.cli import main

    before = gc.get_freeze_count()
    assert main(["--config", str(job), "validate"]) == 0
    assert gc.get_freeze_count() == before
    probe = ("import gc, sys\nfrom app.cli import main\n"
             "sys.argv[1:] = ['--config', sys.argv[1], 'validate']\nmain()\n"
             "print(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe, str(job)], capture_output=True, text=True,
                         check=True).stdout
    assert int(out.strip().splitlines()[-1]) > 1000
