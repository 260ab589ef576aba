"""Attacks by someone who can write the cache, the metrics folder or the marker's folder,
against the real CLI (subprocesses, the ONNX Runtime backend, generated models). Each planted
document, key file, link or FIFO ends as a warning and a rebuild, a one-line error with its exit
code, or "not ready yet": never an internal error, a hang, or a change to a file outside the
cache (a foreign file stands for everything there; its bytes are compared)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, cli, json_events, popen_cli, wait_until_started
from tests.integration.test_planted import _write_config

KEY = "k" * 32
FOREIGN = b"someone else's file: must stay as it is\n"


@pytest.fixture(scope="module")
def warm_job(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Path:
    """A job folder after one successful signed run."""
    root = tmp_path_factory.mktemp("warm")
    (root / "key").write_text(KEY)
    done = cli("--config", str(_write_config(root, corpus, signing_key_file=str(root / "key"))), "run")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def job(warm_job: Path, tmp_path: Path) -> Path:
    root = tmp_path / "job"
    shutil.copytree(warm_job, root, symlinks=True)
    return root


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "foreign.txt"
    path.parent.mkdir()
    path.write_bytes(FOREIGN)
    return path


def _write(root: Path, corpus: dict[str, Path], *, key: bool = True, **overrides: Any) -> Path:
    if key:
        overrides.setdefault("signing_key_file", str(root / "key"))
    return _write_config(root, corpus, **overrides)


def _run(config: Path, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = cli("--config", str(config), *(args or ("run",)), timeout=timeout, **kw)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr[-2000:]
    return done


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("engine-init: error:")]
    return line


def _record(job: Path, model: str = "dinov2_vpr") -> Path:
    return next((job / "cache").glob(f"{model}__*.record.json"))


# -- 1. records: parsed with bounds, signature first, then checked --------------------------------
def _forge(doc: dict[str, Any], attack: str) -> str:
    """The record's JSON text with ``attack`` applied, and a compared fact changed so that the
    engine is rebuilt (what makes the run read the build history for its ETA)."""
    doc["settings_fingerprint"] = "forged"
    if attack == "duration-1e999":
        return json.dumps(doc).replace('"build_duration_s": ' + json.dumps(doc["build_duration_s"]),
                                       '"build_duration_s": 1e999')
    if attack == "duration-1e300":  # finite, but no build takes that long: sums overflow
        doc["build_duration_s"] = 1e300
        doc["past_builds"] = [{"build_duration_s": 1e300, "timing_cache": None}] * 4
    if attack == "past-builds-nan":
        doc["past_builds"] = [{"build_duration_s": float("nan"), "timing_cache": None}]
    return json.dumps(doc)


@pytest.mark.parametrize("signed", [True, False], ids=["with-key", "without-key"])
@pytest.mark.parametrize("attack", ["duration-1e999", "duration-1e300", "past-builds-nan"])
def test_a_forged_build_history_is_a_rebuild_not_a_failed_boot(job, corpus, attack, signed):
    config = _write(job, corpus, key=signed)
    record = _record(job)
    record.write_text(_forge(json.loads(record.read_text()), attack))
    done = _run(config)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "ready: 1 built, 1 reused" in done.stdout
    # Refused as damaged JSON, or (with a key) by its signature, before any field is read.
    kinds = ("c10.engine.provenance.mismatch", "c10.engine.signature.invalid")
    warned = [e for e in json_events(done.stderr) if e["kind"] in kinds]
    assert [e["kv"]["model_name"] for e in warned] == ["dinov2_vpr"]
    rebuilt = json.loads(_record(job).read_text())  # finite, and no forged history carried over
    assert 0 < rebuilt["build_duration_s"] < 600 and rebuilt["past_builds"] == []
    for event in json_events(done.stderr):
        if event["kind"] == "c10.build.eta":
            assert event["kv"]["eta_s"] is None or event["kv"]["eta_s"] < 1e6


def test_a_signed_records_history_is_read_only_once_its_signature_verifies(job, corpus):
    """Unsigned history is never used for the ETA when a key is set, even a plausible one."""
    config = _write(job, corpus)
    record = _record(job)
    doc = json.loads(record.read_text())
    doc.update(settings_fingerprint="forged", build_duration_s=4321.0,
               past_builds=[{"build_duration_s": 4321.0, "timing_cache": None}])
    record.write_text(json.dumps(doc))  # its signature no longer verifies
    done = _run(config)
    assert done.returncode == 0, done.stderr[-1500:]
    [eta] = [e for e in json_events(done.stderr) if e["kind"] == "c10.build.eta"]
    assert eta["kv"]["this_eta_s"] is None and eta["kv"]["no_estimate_for"] == ["dinov2_vpr"]


def test_a_record_nested_600_deep_is_a_rebuild(job, corpus):
    """Parsed, a record this deep made the record's rewrite (an ONNX file touched since)
    fail with a RecursionError."""
    config = _write(job, corpus, key=False)
    record = _record(job)
    text = json.dumps(json.loads(record.read_text()))
    nested = "[" * 600 + "]" * 600
    planted = f'"precision_in_effect": {{"x": {nested}}}, "_": '
    record.write_text(text.replace('"precision_in_effect": ', planted, 1))
    os.utime(corpus["dinov2_vpr"])  # a new stat: the record is rewritten after the check
    try:
        done = _run(config)
    finally:
        os.utime(corpus["dinov2_vpr"])
    assert done.returncode == 0, done.stderr[-1500:]
    assert "ready: 1 built, 1 reused" in done.stdout
    assert "nested more than" in done.stderr


@pytest.mark.slow  # two runs: one to record the gate's report, one with it forged
@pytest.mark.parametrize("figure", ["Infinity", "NaN", "1e999"])
def test_an_accuracy_figure_that_is_not_finite_is_a_new_check(job, corpus, figure):
    config = _write(job, corpus, key=False, verify="accuracy")
    assert _run(config).returncode == 0  # the gate's report goes into each record
    record = _record(job, "aliked")
    doc = json.loads(record.read_text())
    assert doc["accuracy"], doc
    text = json.dumps(doc)
    metric = next(k for k, v in doc["accuracy"].items() if isinstance(v, float))
    text = text.replace(f'"{metric}": {json.dumps(doc["accuracy"][metric])}', f'"{metric}": {figure}', 1)
    assert figure in text
    record.write_text(text)
    done = _run(config)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "ready: 1 built, 1 reused" in done.stdout and "aliked" in done.stderr


# -- 2. key files through the safe reader ---------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "wait-ready"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_signing_key_file_that_is_no_key_is_a_config_error(job, corpus, kind, command):
    key = job / "planted-key"
    if kind == "fifo":
        os.mkfifo(key)
    elif kind == "dev-zero":
        key = Path("/dev/zero")
    else:
        key.write_bytes(b"k" * (1 << 20))
    config = _write(job, corpus, signing_key_file=str(key))
    args = ("wait-ready", "--timeout", "5") if command == "wait-ready" else ("run",)
    started = time.monotonic()
    done = _run(config, *args, timeout=20)  # a FIFO used to block open() for good
    assert done.returncode == 78, done.stderr[-1500:]
    assert time.monotonic() - started < 10
    line = _error_line(done)
    assert "signing_key_file" in line and str(key) in line
    if kind == "fifo":
        assert key.is_fifo()


# -- 3. the metrics textfile -----------------------------------------------------------------------
def _main_thread_ident() -> int:
    """The main thread's ident of a Python started without address randomization: what
    prometheus_client's temp name used (with pid 1, as in a container, it was predictable)."""
    probe = subprocess.run(["setarch", "-R", sys.executable, "-c",
                            "import threading; print(threading.get_ident())"],
                           capture_output=True, text=True, check=True)
    return int(probe.stdout)


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_planted_metrics_temp_name_changes_and_hangs_nothing(job, corpus, foreign, kind):
    if shutil.which("setarch") is None:
        pytest.skip("setarch (util-linux) is needed to start a process at a known thread ident")
    ident = _main_thread_ident()
    prom = job / "metrics" / "engine_init.prom"
    prom.parent.mkdir()
    config = _write(job, corpus, metrics_textfile=str(prom))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    proc = subprocess.Popen(["setarch", "-R", sys.executable, "-m", "app", "--config", str(config),
                             "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    planted = prom.parent / f"{prom.name}.{proc.pid}.{ident}"  # the old temp name
    if kind == "link":
        planted.symlink_to(foreign)
    else:
        os.mkfifo(planted)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-1500:]
    assert "Traceback" not in stderr and "ready:" in stdout
    assert foreign.read_bytes() == FOREIGN
    assert planted.is_symlink() if kind == "link" else planted.is_fifo()
    assert "engine_init_run_exit_code 0.0" in prom.read_text()
    assert [p.name for p in prom.parent.iterdir() if p.name.startswith(".")] == []


# -- 4. the lock file ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("run",), ("prune", "--dry-run"), ("prune",)])
def test_a_hard_linked_lock_file_leaves_the_foreign_file_unchanged(job, corpus, foreign, command):
    config = _write(job, corpus)
    lock = job / "cache" / ".engine-init.lock"
    lock.unlink()
    os.link(foreign, lock)
    done = _run(config, *command)
    assert done.returncode == 0, done.stderr[-1500:]
    assert foreign.read_bytes() == FOREIGN
    assert os.stat(foreign).st_nlink == 1  # the cache's name now names a file of its own
    damaged = [e for e in json_events(done.stderr) if e["kind"] == "c10.cache.damaged"]
    assert damaged and "hard link" in damaged[0]["msg"]


# -- 6. signals end export and import, with their partial output removed -------------------------
def _big_engine(job: Path, size: int) -> None:
    """The first model's engine replaced by ``size`` random bytes with a matching sidecar and no
    record: an engine pre-installed in an image, which the next run records as this host's."""
    import hashlib

    engine = next(p for p in (job / "cache").glob("dinov2_vpr__*") if p.suffix == ".ort")
    digest = hashlib.sha256()
    with open(engine, "wb") as out:
        for _ in range(size >> 20):
            chunk = os.urandom(1 << 20)
            out.write(chunk)
            digest.update(chunk)
    Path(f"{engine}.sha256").write_text(digest.hexdigest() + "\n")
    Path(f"{engine}.record.json").unlink()


def _signal_when(proc: subprocess.Popen[str], ready: Any, signum: int) -> float:
    """Send ``signum`` once ``ready()``; the seconds the process then took to exit."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-1500:]
        assert time.monotonic() < deadline, "the command never got that far"
        time.sleep(0.005)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=10)
    finally:
        proc.kill()
    return time.monotonic() - sent


@pytest.fixture
def fleet_job(job: Path, corpus: dict[str, Path]) -> dict[str, Path]:
    keys = job / "keys"
    keys.mkdir()
    assert cli("fleet", "keygen", str(keys / "k.pem"), str(keys / "k.pub.pem")).returncode == 0
    config = _write(job, corpus, key=False, fleet={"private_key_file": str(keys / "k.pem"),
                                                   "public_key_file": str(keys / "k.pub.pem")})
    _big_engine(job, 384 << 20)
    assert _run(config).returncode == 0
    return {"config": config, "out": job / "out"}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("name", ["bundle", "bundle.tar"])
def test_a_signal_ends_export_and_leaves_no_partial_bundle(fleet_job, name, signum):
    out = fleet_job["out"]
    out.mkdir()
    proc = popen_cli("--config", str(fleet_job["config"]), "export", str(out / name))
    wait_until_started(proc.pid)
    took = _signal_when(proc, lambda: any(out.iterdir()), signum)  # its temp output exists
    assert proc.returncode == 128 + signum and took < 2, (proc.returncode, took)
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_signal_ends_import_and_stores_no_partial_candidate(fleet_job, job):
    out = fleet_job["out"]
    out.mkdir()
    bundle = out / "bundle"
    assert _run(fleet_job["config"], "export", str(bundle)).returncode == 0
    candidates = job / "cache" / "candidates"
    proc = popen_cli("--config", str(fleet_job["config"]), "import", str(bundle))
    wait_until_started(proc.pid)

    def staging() -> bool:
        return candidates.is_dir() and any(p.name.startswith(".") and ".tmp-" in p.name
                                           for p in candidates.iterdir())

    took = _signal_when(proc, staging, signal.SIGTERM)
    assert proc.returncode == 143 and took < 2, (proc.returncode, took)
    time.sleep(0.2)  # what an abandoned worker might still have written
    assert [p.name for p in candidates.iterdir() if not p.name.endswith(".lock")] == []


# -- 7. wait-ready ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e999"])
def test_wait_ready_refuses_a_timeout_that_is_no_timeout(job, corpus, value):
    done = _run(_write(job, corpus), "wait-ready", "--timeout", value, timeout=20)
    assert done.returncode == 2, done.stderr[-800:]
    assert "--timeout" in done.stderr and "finite" in done.stderr


def _marker_doc(job: Path) -> dict[str, Any]:
    return json.loads((job / "run" / "ready.json").read_text())


MARKERS = {
    "nested-5000": lambda doc: '{"schema": 1, "engines": ' + "[" * 5000 + "]" * 5000 + "}",
    "engine-not-a-mapping": lambda doc: json.dumps({**doc, "engines": [1, "x", None]}),
    "engine-path-not-a-string": lambda doc: json.dumps(
        {**doc, "engines": [{**doc["engines"][0], "engine_path": ["a"]}]}),
    "boot-id-a-list": lambda doc: json.dumps({**doc, "boot_id": [doc["boot_id"]]}),
    "nan": lambda doc: json.dumps({**doc, "created_at": float("nan")}),
    "big-int": lambda doc: json.dumps(doc)[:-1] + ', "x": ' + "9" * 5000 + "}",
}


@pytest.mark.parametrize("attack", list(MARKERS))
def test_a_malformed_marker_is_not_ready_until_the_timeout(job, corpus, attack):
    config = _write(job, corpus, key=False)  # no signature to check first: the layout is read
    marker = job / "run" / "ready.json"
    marker.write_text(MARKERS[attack](_marker_doc(job)))
    started = time.monotonic()
    done = _run(config, "wait-ready", "--timeout", "1", timeout=20)
    assert done.returncode == 75, done.stderr[-800:]
    assert time.monotonic() - started >= 1
    assert "not ready after 1 s" in _error_line(done)


def test_wait_ready_still_ends_on_sigterm_within_2_s_whatever_the_marker(job, corpus):
    config = _write(job, corpus)
    (job / "run" / "ready.json").write_text(MARKERS["nested-5000"]({}))
    proc = popen_cli("--config", str(config), "wait-ready", "--timeout", "60")
    wait_until_started(proc.pid)
    time.sleep(0.5)
    took = _signal_when(proc, lambda: True, signal.SIGTERM)
    assert proc.returncode == 143 and took < 2
