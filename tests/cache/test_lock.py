"""The cache lock, with real processes and real flocks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from app.cache.lock import CacheLock, read_holder
from app.errors import LockTimeoutError

HOLD = """
import sys, time, logging
from pathlib import Path
from app.cache.lock import CacheLock
with CacheLock(Path(sys.argv[1]), 5, logging.getLogger("x")):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_timeout_names_the_holder(tmp_path, caplog):
    proc = _holder(tmp_path, 30)
    try:
        with pytest.raises(LockTimeoutError) as caught, CacheLock(tmp_path, 0.3, logging.getLogger("t")):
            pass
        assert f"pid {proc.pid}" in str(caught.value)
        assert read_holder(tmp_path / ".engine-init.lock")["pid"] == proc.pid  # type: ignore[index]
    finally:
        proc.kill()
        proc.wait()


def test_waiter_logs_then_gets_the_lock_when_the_holder_finishes(tmp_path, caplog):
    proc = _holder(tmp_path, 0.5)
    logger = logging.getLogger("t.wait")
    with caplog.at_level(logging.INFO, logger="t.wait"), CacheLock(tmp_path, 10, logger) as lock:
        assert lock.waited_s > 0.1
    assert any(getattr(r, "kind", "") == "c10.cache.lock.wait" for r in caplog.records)
    proc.wait()


def test_lock_of_a_killed_process_never_blocks(tmp_path):
    proc = _holder(tmp_path, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.monotonic()
    with CacheLock(tmp_path, 2, logging.getLogger("t")):
        pass
    assert time.monotonic() - start < 1


def test_reentrant_within_a_process(tmp_path):
    logger = logging.getLogger("t")
    with CacheLock(tmp_path, 1, logger), CacheLock(tmp_path, 0.2, logger) as inner:
        assert inner.waited_s == 0
    # fully released: another process gets it at once
    proc = _holder(tmp_path, 0)
    proc.wait()
    assert proc.returncode == 0
