"""The cache lock, with real processes and real flocks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from app.cache.lock import LOCK_NAME, CacheLock, read_holder
from app.errors import CacheWriteError, LockTimeoutError
from tests.helpers import PLANTED_KINDS, plant, within

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


def test_taken_once_not_reentrant(tmp_path):
    """A run takes the lock once; a second acquisition in the same process waits like any other
    (flock is per open file), so nothing may take it twice."""
    logger = logging.getLogger("t")
    with CacheLock(tmp_path, 1, logger) as lock:
        assert lock.held
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire()
        with pytest.raises(LockTimeoutError):
            CacheLock(tmp_path, 0.2, logger).acquire()
    assert not lock.held
    proc = _holder(tmp_path, 0)  # fully released: another process gets it at once
    proc.wait()
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", [k for k in PLANTED_KINDS if not k.startswith("folder")])
def test_damage_at_the_lock_name_is_replaced_never_followed(tmp_path, kind, caplog):
    lock_file = tmp_path / LOCK_NAME
    lock_file.write_bytes(b"")
    target = plant(lock_file, kind, tmp_path.parent / f"{tmp_path.name}-outside")
    before = target.read_bytes() if target else None
    logger = logging.getLogger("t.damage")
    with caplog.at_level(logging.WARNING, logger="t.damage"):
        within(5, lambda: CacheLock(tmp_path, 2, logger).__enter__().release())
    regular = kind in ("huge", "sparse-8g")  # a regular file is the lock file, whatever its size
    replaced = [r for r in caplog.records if getattr(r, "kind", "") == "c10.cache.damaged"]
    assert len(replaced) == (0 if regular else 1)
    assert lock_file.is_file() and not lock_file.is_symlink()
    if target is not None:
        assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["folder", "folder-with-data"])
def test_a_folder_at_the_lock_name_is_refused_and_kept(tmp_path, kind):
    lock_file = tmp_path / LOCK_NAME
    plant(lock_file, kind, tmp_path)
    with pytest.raises(CacheWriteError, match="is a folder") as caught:
        CacheLock(tmp_path, 1, logging.getLogger("t")).acquire()
    assert str(lock_file) in str(caught.value)
    assert lock_file.is_dir()
    if kind == "folder-with-data":
        assert (lock_file / "someones-notes.txt").read_text() == "keep me"


def test_a_hard_link_at_the_lock_name_is_replaced_and_its_file_never_truncated(tmp_path, caplog):
    foreign = tmp_path.parent / f"{tmp_path.name}-foreign.txt"
    foreign.write_bytes(b"someone's data\n")
    os.link(foreign, tmp_path / LOCK_NAME)
    logger = logging.getLogger("t.hardlink")
    with caplog.at_level(logging.WARNING, logger="t.hardlink"), CacheLock(tmp_path, 2, logger):
        assert read_holder(tmp_path / LOCK_NAME)["pid"] == os.getpid()  # type: ignore[index]
    assert foreign.read_bytes() == b"someone's data\n" and foreign.stat().st_nlink == 1
    [damaged] = [r for r in caplog.records if getattr(r, "kind", "") == "c10.cache.damaged"]
    assert "hard link" in damaged.getMessage()


def test_a_link_made_to_the_held_lock_file_is_not_truncated_on_release(tmp_path):
    lock = CacheLock(tmp_path, 2, logging.getLogger("t"))
    lock.acquire()
    other = tmp_path.parent / f"{tmp_path.name}-other-name"
    os.link(tmp_path / LOCK_NAME, other)  # the file now has a name outside the cache
    note = other.read_bytes()
    lock.release()
    assert other.read_bytes() == note and note
