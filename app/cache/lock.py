"""The inter-process cache lock: ``flock`` on ``<cache_root>/.engine-init.lock``.

The kernel drops an ``flock`` when its holder dies, so a lock left by a killed run never blocks
the next boot. The holder writes its pid, host and start time into the file so that a waiter
can name it. The lock only prevents duplicate builds: correctness comes from atomic publishing
and from re-checking the cache after the lock is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from app import events
from app.cache.fsread import read_small
from app.cache.publish import os_error_to_cache_error
from app.cancel import CANCEL, cancelled_error
from app.errors import LockTimeoutError

__all__ = ["LOCK_NAME", "CacheLock", "read_holder"]

LOCK_NAME = ".engine-init.lock"
# Re-entrant within a process: a second flock on a new descriptor of the same file would wait
# for the first forever. path -> [descriptor, depth]
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()
_POLL_S = 0.05
_LOG_EVERY_S = 5.0
_HOLDER_MAX = 4096


def read_holder(lock_file: Path) -> dict[str, object] | None:
    """What the holder wrote about itself; None when absent or not a small JSON object."""
    try:
        raw = read_small(lock_file, _HOLDER_MAX)
        doc = json.loads(raw) if raw else None
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "an unknown holder"
    started = holder.get("started_at", "?")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started {started})"


class CacheLock:
    """``with CacheLock(root, timeout_s, logger):`` waits up to ``timeout_s`` for the lock."""

    def __init__(self, cache_root: Path, timeout_s: float, logger: logging.Logger) -> None:
        self.path = Path(cache_root) / LOCK_NAME
        self.timeout_s = timeout_s
        self.logger = logger
        self._fd: int | None = None
        self.waited_s = 0.0

    def acquire(self) -> None:
        key = os.path.abspath(self.path)
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                self._fd = _HELD[key][0]
                return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # a first boot: no cache yet
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise os_error_to_cache_error(exc, self.path) from exc
        start = time.monotonic()
        next_log = start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                holder = read_holder(self.path)
                if now - start >= self.timeout_s:
                    os.close(fd)
                    raise LockTimeoutError(
                        f"cache {self.path.parent} is locked by {_describe(holder)}; "
                        f"gave up after {self.timeout_s:g} s",
                        hint="wait for that run to finish, or raise lock_timeout_s",
                    ) from None
                if now >= next_log:
                    events.emit(
                        self.logger, logging.INFO, events.LOCK_WAIT,
                        f"waiting for the cache lock held by {_describe(holder)}",
                        holder=holder, waited_s=round(now - start, 3),
                    )
                    next_log = now + _LOG_EVERY_S
                time.sleep(_POLL_S)
                if CANCEL.is_set():
                    os.close(fd)
                    raise cancelled_error() from None
        self.waited_s = time.monotonic() - start
        self._fd = fd
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        self._write_holder(fd)

    def _write_holder(self, fd: int) -> None:
        doc = {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(doc).encode(), 0)
        except OSError:
            pass  # the holder note is a courtesy to waiters; the flock is what counts

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        key = os.path.abspath(self.path)
        with _HELD_GUARD:
            _HELD[key][1] -= 1
            if _HELD[key][1] > 0:
                return
            del _HELD[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> CacheLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
