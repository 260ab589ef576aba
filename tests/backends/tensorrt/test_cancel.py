"""Cancelling a TensorRT build: 10.x stops at the next step and the caller waits for the build
thread (bounded); 8.x cannot be stopped, and a SIGTERM still ends the real process cleanly.
The TensorRT and cuda-python modules are the stand-ins (FakeTensorRT, FakeCudart); in the
process tests they are installed as ``tensorrt`` and ``cuda`` on the child's PYTHONPATH."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from app import PrecisionMode
from app.cancel import CANCEL, CANCEL_GRACE_S, call_cancellable
from app.errors import BuildCancelledError
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import config, runtime_for, start_job, write_job, write_standin_site


@pytest.fixture(autouse=True)
def _clear_cancel():
    CANCEL.clear()
    yield
    CANCEL.clear()


def _build_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "build" and t.is_alive()]


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3"])
def test_after_a_cancel_on_10x_the_build_thread_ends_and_frees_its_buffers(version, tmp_path, corpus):
    fake = FakeTensorRT(version)

    def slow_step(step: int) -> None:
        if step == 1:
            CANCEL.set()  # as the SIGTERM handler does
        time.sleep(0.3)   # a tactic being timed: the monitor is asked again only after it

    fake.on_step = slow_step
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
    with pytest.raises(BuildCancelledError):
        call_cancellable(lambda: runtime_for(fake).compile_engine(corpus["aliked"], cfg))
    assert not _build_threads()
    assert fake.gpu.ever_allocated and not fake.gpu.allocated  # calibration buffers freed
    assert not list(tmp_path.rglob("*.engine"))


def test_a_build_that_cannot_stop_is_waited_for_only_a_bounded_time(tmp_path, corpus):
    """TensorRT 8.x: no progress monitor, the build runs on whatever is asked."""
    fake = FakeTensorRT("8.6.2")
    release = threading.Event()
    fake.on_build = lambda: (CANCEL.set(), release.wait(30))
    started = time.monotonic()
    try:
        with pytest.raises(BuildCancelledError):
            call_cancellable(lambda: runtime_for(fake).compile_engine(corpus["aliked"],
                                                                      config(tmp_path, "aliked")))
        waited = time.monotonic() - started
        assert CANCEL_GRACE_S <= waited < CANCEL_GRACE_S + 1.0
        assert _build_threads()  # still inside "TensorRT": left to the process exit
    finally:
        release.set()


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize(("version", "slow", "returns"), [
    ("8.6.2", {"FAKE_TRT_BUILD_S": "30"}, False),  # nothing stops it: the process ends around it
    ("10.3.0", {"FAKE_TRT_STEP_S": "0.2"}, True),  # the monitor stops it; the job waits for it
    # 10.x timing tactics: a long window with no progress callback (a real 111 s build had one
    # of 110 s, rerun-io/examples-monorepo#90): the process ends around the build, in time
    ("10.3.0", {"FAKE_TRT_BUILD_S": "30"}, False),
])
def test_sigterm_during_a_build_ends_the_process_cleanly(version, slow, returns, tmp_path, corpus):
    site = write_standin_site(tmp_path / "site", version)
    job = write_job(tmp_path, corpus["aliked"])
    ok = start_job(job, site, L4T_VERSION="36.3.0")
    _, stderr = ok.communicate(timeout=60)
    assert ok.returncode == 0, stderr[-2000:]  # the stand-ins work end to end
    engine = next((tmp_path / "cache").glob("aliked__*.engine"))
    engine.unlink()
    report = tmp_path / "build"
    proc = start_job(job, site, L4T_VERSION="36.3.0", FAKE_TRT_REPORT=str(report), **slow)
    _wait_for(report.with_suffix(".started"))  # inside build_serialized_network
    time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 143, stderr[-2000:]
    assert elapsed < 2.0, f"exited {elapsed:.2f} s after SIGTERM"
    assert "interrupted by SIGTERM" in stderr
    for crash in ("Traceback", "Aborted", "core dumped", "Fatal Python error", "Exception ignored",
                  "terminate called"):
        assert crash not in stderr, stderr[-2000:]
    assert [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name] == []
    assert not (tmp_path / "run" / "ready.json").exists()
    assert not engine.exists()
    assert report.with_suffix(".returned").exists() == returns
