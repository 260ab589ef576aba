"""SIGTERM and SIGINT during a build: 143/130 within 2 s, temp files removed, no marker."""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.conftest import cli, popen_cli


def _wait_for_build(proc, job) -> None:
    deadline = time.monotonic() + 30
    # The build has started when a pending record ("status": "building") appears.
    while time.monotonic() < deadline:
        for record in (job.parent / "cache").glob("*.record.json"):
            try:
                if '"building"' in record.read_text():
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("the build never started")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_a_build(job, signum, code):
    assert cli("--config", str(job), "run").returncode == 0  # a marker from an earlier boot
    (job.parent / "cache" / next(p.name for p in (job.parent / "cache").glob("dinov2*.ort"))).unlink()
    proc = popen_cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": "slow_build_s=60"})
    _wait_for_build(proc, job)
    time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=10)
    elapsed = time.monotonic() - sent
    assert proc.returncode == code, stderr[-800:]
    assert elapsed < 2.0, f"exited {elapsed:.2f} s after the signal"
    assert f"interrupted by {signum.name}" in stderr and "Traceback" not in stderr
    assert not (job.parent / "run" / "ready.json").exists()
    assert [p.name for p in (job.parent / "cache").iterdir() if ".tmp-" in p.name] == []
    again = cli("--config", str(job), "run")
    assert again.returncode == 0 and "1 built, 2 reused" in again.stdout


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_at_start_up_is_clean_too(job, signum, code):
    """A signal before any build (while importing, loading the config) still exits cleanly."""
    proc = popen_cli("--config", str(job), "run")
    time.sleep(0.15)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=10)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert proc.returncode in (code, -signum), stderr
    if proc.returncode == code:
        assert f"interrupted by {signum.name}" in stderr and "Traceback" not in stderr
    assert not (job.parent / "run" / "ready.json").exists()
