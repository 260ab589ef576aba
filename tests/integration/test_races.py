"""Races: four runs on one cold cache, lock timeouts that name the holder, dead holders."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import yaml

from tests.helpers import assert_consistent, cli, json_events, popen_cli, sha256


def test_four_runs_together_build_each_engine_once(job):
    procs = [popen_cli("--config", str(job), "run") for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [r[1][-500:] for r in results]
    built = Counter(e["kv"]["model_name"] for _, err in results for e in json_events(err)
                    if e["kind"] == "c10.engine.built")
    assert built == Counter({"dinov2_vpr": 1, "lightglue": 1, "aliked": 1})
    waits = sum(e["kind"] == "c10.cache.lock.wait" for _, err in results for e in json_events(err))
    marker = json.loads((job.parent / "run" / "ready.json").read_text())
    for item in marker["engines"]:
        assert sha256(Path(item["engine_path"])) == item["sha256"]
    assert assert_consistent(job) == ["dinov2_vpr", "lightglue", "aliked"]
    print(f"4 concurrent runs: built {dict(built)}, {waits} lock-wait events")


def test_lock_timeout_exits_75_naming_the_holder(job):
    doc = yaml.safe_load(job.read_text())
    doc["lock_timeout_s"] = 0.5
    job.write_text(yaml.safe_dump(doc))
    holder = popen_cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": "slow_build_s=30"})
    try:
        deadline = time.monotonic() + 30
        lock = job.parent / "cache" / ".engine-init.lock"
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        waiter = cli("--config", str(job), "run")
        assert waiter.returncode == 75
        assert f"pid {holder.pid}" in waiter.stderr and "started" in waiter.stderr
        assert "Traceback" not in waiter.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    # The holder was killed: its lock must not block the next boot.
    start = time.monotonic()
    after = cli("--config", str(job), "run")
    assert after.returncode == 0 and time.monotonic() - start < 30
    lock_waits = [e for e in json_events(after.stderr) if e["kind"] == "c10.cache.lock.wait"]
    assert lock_waits == []
