"""The metrics textfile, written by real ``engine-init run`` processes and read back with
prometheus_client's own exposition parser (as node_exporter's textfile collector would); and
the termination-message file Kubernetes reads.

``ENGINE_INIT_TERMINATION_LOG`` points the job at a file in the test's folder instead of the
kubelet's ``/dev/termination-log``; the kubelet creates that file before the container starts,
so the tests do the same where a write is expected."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import MAX_BYTES
from tests.helpers import cli, json_events, popen_cli, tmpfs, wait_for_build, write_job_config


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


def _bad_config(tmp_path, corpus, **extra):
    return write_job_config(tmp_path, corpus, workspace_mb=-1, **extra)


def _run(job, log, **kw) -> subprocess.CompletedProcess[str]:
    return cli("--config", str(job), "run", env={"ENGINE_INIT_TERMINATION_LOG": str(log)}, **kw)


def _error_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("engine-init: error: ")]
    return line


def test_a_failure_writes_the_error_line_and_the_exit_code(tmp_path, corpus):
    log = tmp_path / "termination-log"
    log.touch()
    result = _run(_bad_config(tmp_path, corpus), log)
    assert result.returncode == 78
    line = _error_line(result.stderr)
    assert "workspace_mb: Input should be greater than 0" in line
    assert log.read_text() == f"{line} (exit code 78)\n"


def test_success_leaves_the_file_alone(tmp_path, corpus):
    log = tmp_path / "termination-log"
    log.touch()
    assert _run(write_job_config(tmp_path, corpus), log).returncode == 0
    assert log.read_bytes() == b""


def test_a_long_reason_is_cut_to_4_kb_keeping_the_exit_code(tmp_path, corpus):
    # A config error names at most 5 problems, each clipped: the line is made long by the
    # config's own path (12 folders of 200 bytes) and long unknown keys, in 2-byte letters.
    deep = tmp_path.joinpath(*[f"{i:02d}" + "д" * 99 for i in range(12)])
    deep.mkdir(parents=True)
    job = _bad_config(tmp_path, corpus)
    doc = yaml.safe_load(job.read_text())
    doc.update({f"ключ_{i:03d}_" + "я" * 200: i for i in range(400)})  # 400 unknown keys
    job = deep / "config.yaml"
    job.write_text(yaml.safe_dump(doc, allow_unicode=True))
    log = tmp_path / "termination-log"
    log.write_bytes(b"x" * 10_000)  # whatever was there is replaced, not appended to
    result = _run(job, log)
    assert result.returncode == 78
    data = log.read_bytes()
    assert len(_error_line(result.stderr).encode()) > MAX_BYTES + 200
    assert MAX_BYTES - 2 <= len(data) <= MAX_BYTES  # a 2-byte letter may not fit at the cut
    text = data.decode("utf-8")  # cut on a character boundary
    assert text.endswith(" (exit code 78)\n")
    assert _error_line(result.stderr).startswith(text.removesuffix(" (exit code 78)\n"))


def test_a_fifo_there_does_not_hang_the_job(tmp_path, corpus):
    fifo = tmp_path / "termination-log"
    os.mkfifo(fifo)
    job = _bad_config(tmp_path, corpus)
    started = time.monotonic()
    assert _run(job, fifo, timeout=60).returncode == 78  # no reader: a blocking open would wait
    # With a reader holding it open, a write would succeed: it must not happen either.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert _run(job, fifo, timeout=60).returncode == 78
        try:
            leaked = os.read(reader, 65536)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        os.close(reader)
    assert time.monotonic() - started < 50
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_missing_file_is_not_created_and_a_folder_is_ignored(tmp_path, corpus):
    job = _bad_config(tmp_path, corpus)
    absent = tmp_path / "termination-log"
    assert _run(job, absent).returncode == 78
    assert not absent.exists()  # as root, the job must not plant a file in a host's /dev
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert _run(job, folder).returncode == 78
    assert list(folder.iterdir()) == []


def test_a_symlink_is_not_followed(tmp_path, corpus):
    victim = tmp_path / "victim.txt"
    victim.write_text("not the job's\n")
    link = tmp_path / "termination-log"
    link.symlink_to(victim)
    assert _run(_bad_config(tmp_path, corpus), link).returncode == 78
    assert victim.read_text() == "not the job's\n" and link.is_symlink()


def test_an_unwritable_file_is_ignored(tmp_path, corpus):
    """A file on a read-only filesystem (as root, permission bits would not stop the write)."""
    job = _bad_config(tmp_path, corpus)
    with tmpfs(tmp_path / "ro", "size=64k,mode=755") as ro:
        log = ro / "termination-log"
        log.write_text("old\n")
        remount = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True)
        assert remount.returncode == 0, remount.stderr
        result = _run(job, log)
        assert result.returncode == 78 and "Traceback" not in result.stderr
        assert log.read_text() == "old\n"
