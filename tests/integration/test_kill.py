"""Kill at any instant: SIGKILL at random moments of a cold run, and at every publish step.

KILL_TRIALS sets the number of random trials (default 30)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.helpers import assert_consistent, cli, json_events, popen_cli, sha256

TRIALS = int(os.environ.get("KILL_TRIALS", "30"))


def _recover(job):
    again = cli("--config", str(job), "run")
    assert again.returncode == 0, again.stderr
    assert cli("--config", str(job), "verify").returncode == 0
    assert not [p for p in (job.parent / "cache").iterdir() if ".tmp-" in p.name]


def test_sigkill_at_random_moments(job):
    import shutil

    start = time.monotonic()
    assert cli("--config", str(job), "run").returncode == 0
    full = time.monotonic() - start
    seed = int(os.environ.get("KILL_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    outcomes = {"killed": 0, "finished": 0}
    last_events: dict[str, int] = {}
    for _ in range(TRIALS):
        shutil.rmtree(job.parent / "cache")
        (job.parent / "run" / "ready.json").unlink(missing_ok=True)
        proc = popen_cli("--config", str(job), "run")
        time.sleep(rng.uniform(0.0, full))
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        outcomes["killed" if proc.returncode == -signal.SIGKILL else "finished"] += 1
        seen = json_events(stderr)
        where = seen[-1]["kind"] if seen else "before any event"
        last_events[where] = last_events.get(where, 0) + 1
        assert_consistent(job)
        _recover(job)
    print(f"seed {seed}: {TRIALS} trials over a {full:.2f} s run: {outcomes}; last event "
          f"before the kill: {last_events}")
    assert outcomes["killed"] >= TRIALS // 2, outcomes


POINTS = [(point, pattern) for pattern in ("*.ort", "*.ort.sha256", "*.record.json#1",
                                           "*.record.json#2", "ready.json")
          for point in ("before_rename", "after_rename")]


@pytest.mark.parametrize(("point", "pattern"), POINTS)
def test_kill_between_publish_steps(job, point, pattern):
    """Power cut before/after each rename: engine, sidecar, pending record, final record, marker."""
    proc = popen_cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": f"kill_at={point}:{pattern}"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    accepted = assert_consistent(job)
    if pattern != "ready.json" or point == "before_rename":
        assert not (job.parent / "run" / "ready.json").exists()
    _recover(job)
    assert accepted is not None


def test_kill_during_a_rebuild_keeps_the_old_engine_refused(job, corpus, tmp_path):
    """An engine whose rebuild is cut short is neither the old nor half the new one."""
    assert cli("--config", str(job), "run").returncode == 0
    engines = {p.name: sha256(p) for p in (job.parent / "cache").glob("*.ort")}
    cfg = job.read_text().replace("workspace_mb: 4096", "workspace_mb: 2048")
    if cfg == job.read_text():
        cfg = job.read_text() + "workspace_mb: 2048\n"
    job.write_text(cfg)
    proc = popen_cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": "kill_at=after_rename:*.ort"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    accepted = assert_consistent(job)
    assert accepted == []  # settings changed: nothing old may be accepted, the new one is pending
    _recover(job)
    assert engines
