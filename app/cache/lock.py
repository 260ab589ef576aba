"""The inter-process cache lock: ``flock`` on ``<cache_root>/.engine-init.lock`` (dropped by
the kernel when its holder dies; not re-entrant). It only prevents duplicate builds: atomic
publishing and a re-check after locking make them correct. What may stand at its name:
docs/hardening.md#lock-file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from app import events
from app.cache.fsread import describe_mode, parse_json, read_small
from app.cache.names import LOCK_NAME
from app.cache.publish import atomic_write_bytes, os_error_to_cache_error
from app.cancel import checkpoint
from app.errors import CacheWriteError, LockTimeoutError

_POLL_S = 0.05
_LOG_EVERY_S = 5.0
_HOLDER_MAX = 4096
_OPEN_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))


def read_holder(lock_file: Path) -> dict[str, object] | None:
    try:
        raw = read_small(lock_file, _HOLDER_MAX)
        doc = parse_json(raw) if raw else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def wait_flock(open_fd: Callable[[], int], timeout_s: float, *,
               waiting: Callable[[float], None], timed_out: Callable[[], LockTimeoutError],
               current: Callable[[int], bool] | None = None, first_log_s: float = 0.0) -> int:
    """The one wait for an exclusive ``flock`` (the cache lock, a SKU's candidates), polled so
    that SIGTERM ends it. ``waiting(waited_s)``: after ``first_log_s``, then every 5 s;
    ``current(fd)`` False after locking (the file was replaced): lock a freshly opened one."""
    start = time.monotonic()
    next_log = start + first_log_s
    fd = open_fd()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if current is None or current(fd):
                    return fd
                os.close(fd)
                fd = -1
                fd = open_fd()
                continue
            except BlockingIOError:
                pass
            now = time.monotonic()
            if now - start >= timeout_s:
                raise timed_out()
            if now >= next_log:
                waiting(now - start)
                next_log = now + _LOG_EVERY_S
            time.sleep(_POLL_S)
            checkpoint()
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _alone(fd: int) -> bool:
    """No other name: a link made to the lock file since it was opened would have truncation
    change a file someone else names."""
    return os.fstat(fd).st_nlink == 1


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "an unknown holder"
    started = holder.get("started_at", "?")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started {started})"


class CacheLock:
    """The holder writes its pid, host and start time into the file: a waiter names it."""

    def __init__(self, cache_root: Path, timeout_s: float, logger: logging.Logger) -> None:
        self.path = Path(cache_root) / LOCK_NAME
        self.timeout_s = timeout_s
        self.logger = logger
        self._fd: int | None = None
        self.waited_s = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this CacheLock")
        start = time.monotonic()

        def waiting(waited_s: float) -> None:
            holder = read_holder(self.path)
            events.emit(self.logger, logging.INFO, events.LOCK_WAIT,
                        f"waiting for the cache lock held by {_describe(holder)}",
                        holder=holder, waited_s=round(waited_s, 3))

        def timed_out() -> LockTimeoutError:
            return LockTimeoutError(
                f"cache {self.path.parent} is locked by {_describe(read_holder(self.path))}; "
                f"gave up after {self.timeout_s:g} s",
                hint="wait for that run to finish, or raise lock_timeout_s",
            )

        fd = wait_flock(self._open, self.timeout_s, waiting=waiting, timed_out=timed_out,
                        current=self._still_the_lock_file)
        self.waited_s = time.monotonic() - start
        self._fd = fd
        self._write_holder(fd)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # a first boot: no cache yet
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise os_error_to_cache_error(exc, self.path) from exc
        if mode is not None and stat.S_ISDIR(mode):
            raise CacheWriteError(f"{self.path} is a folder where engine-init keeps its lock "
                                  "file; it may hold someone's data, so it is left alone",
                                  hint="move it out of the cache folder")
        if mode is not None and not stat.S_ISREG(mode):
            self._replace(describe_mode(mode))
        for _ in range(3):
            try:
                fd = os.open(self.path, _OPEN_FLAGS, 0o644)
            except OSError as exc:
                raise os_error_to_cache_error(exc, self.path) from exc
            opened = os.fstat(fd)
            if stat.S_ISREG(opened.st_mode) and opened.st_nlink == 1:
                return fd
            os.close(fd)
            if not stat.S_ISREG(opened.st_mode):  # swapped in between: not ours to fight
                break
            # A hard link to someone's file: the rename replaces only our name for it.
            self._replace(f"a file with {opened.st_nlink - 1} other name(s) (a hard link)")
        raise CacheWriteError(f"{self.path} keeps changing into something else than a file",
                              hint="find what writes into the cache folder")

    def _replace(self, found: str) -> None:
        events.emit(self.logger, logging.WARNING, events.CACHE_DAMAGED,
                    f"{found} stood where the lock file goes; replaced",
                    path=str(self.path), found=found)
        atomic_write_bytes(self.path, b"")

    def _still_the_lock_file(self, fd: int) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        opened = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)

    def _write_holder(self, fd: int) -> None:
        doc = {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            if _alone(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(doc).encode(), 0)
        except OSError:
            pass  # the holder note is a courtesy to waiters; the flock is what counts

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if _alone(fd):
                os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> CacheLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
