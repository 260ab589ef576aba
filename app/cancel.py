"""Cancellation (docs/hardening.md#signals), and the fault injection the attack tests use.

The handler only records the signal: an exception raised from a handler lands in whatever the
main thread runs (a finalizer, where Python prints "Exception ignored" and carries on, or a
cleanup half done). The job stops at its checkpoints and in every wait of the main thread;
blocking work runs in daemon workers it waits on (:func:`call_cancellable`), never joined on exit.

``ENGINE_INIT_FAULTS`` (unset in production), comma-separated: ``kill_at=<point>:<glob>[#n]``
SIGKILLs at a publish point (``before_rename``, ``after_rename``, ``candidate_chunk``) the n-th
time a matching file reaches it; ``enospc_after=<bytes>`` fails cache writes with ENOSPC after
that many bytes; ``slow_build_s=<s>`` delays each build (cancellable).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from app.errors import BuildCancelledError

if TYPE_CHECKING:  # app/__main__.py imports this module before the signal handlers go in
    from pathlib import Path

_T = TypeVar("_T")
_R = TypeVar("_R")
#: How often a waiting main thread looks at the flag.
_POLL_S = 0.02


class CancelFlag:
    """Set once a signal arrived. Not a ``threading.Event``: its ``set()`` takes a lock the
    interrupted main thread may hold inside ``wait()``, and the handler would wait forever."""

    def __init__(self) -> None:
        self._signum = 0

    def set(self, signum: int = signal.SIGTERM) -> None:
        if not self._signum:  # the first signal names the cancellation
            self._signum = int(signum)

    def clear(self) -> None:
        self._signum = 0

    def is_set(self) -> bool:
        return self._signum != 0

    @property
    def signum(self) -> int:
        return self._signum or signal.SIGTERM


CANCEL = CancelFlag()
# A TensorRT 10 build stops at its next step and frees its GPU buffers within it; a TensorRT 8
# build cannot be stopped and ends with the process. Short enough for a 2 s exit.
CANCEL_GRACE_S = 1.0


def cancelled_error() -> BuildCancelledError:
    return BuildCancelledError(CANCEL.signum)


def checkpoint() -> None:
    if CANCEL.is_set():
        raise cancelled_error()


def _handler(signum: int, frame: FrameType | None) -> None:
    CANCEL.set(signum)


def install_signal_handlers() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _handler)


def cancellable_sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        checkpoint()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(_POLL_S, left))


def call_cancellable(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a worker (a build holds its thread in C code, where no checkpoint runs); on
    cancel it gets :data:`CANCEL_GRACE_S` to end, then is abandoned."""
    return map_cancellable(lambda _: fn(), [None], 1, grace_s=CANCEL_GRACE_S, name="build")[0]


def map_cancellable(fn: Callable[[_T], _R], items: Sequence[_T], max_workers: int,
                    grace_s: float = 0.0, name: str = "worker") -> list[_R]:
    """``[fn(item) for item in items]`` in up to ``max_workers`` daemon threads; the first
    item's error once all are done, or the cancellation at once (after ``grace_s``)."""
    results: list[Any] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    indices = iter(range(len(items)))
    guard = threading.Lock()

    def work() -> None:
        while not CANCEL.is_set():
            with guard:
                i = next(indices, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:
                errors[i] = exc

    count = max(1, min(max_workers, len(items)))
    workers = [threading.Thread(target=work, name=name if count == 1 else f"{name}-{n}", daemon=True)
               for n in range(count)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(_POLL_S)
                checkpoint()
        checkpoint()
    except BuildCancelledError:
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        raise
    if errors:
        raise errors[min(errors)]
    return results


_written = [0]
_matches = [0]


@functools.cache
def _settings() -> dict[str, str]:
    from app.values import FAULTS_ENV  # not before the signal handlers are in (app/__main__.py)

    raw = os.environ.get(FAULTS_ENV, "")
    items = (item.partition("=") for item in raw.split(",") if item.strip())
    return {key.strip(): value.strip() for key, _, value in items}


def point(name: str, path: Path) -> None:
    spec = _settings().get("kill_at")
    if not spec:
        return
    import fnmatch

    where, _, pattern = spec.partition(":")
    pattern, _, nth = pattern.partition("#")
    if where == name and fnmatch.fnmatch(path.name, pattern or "*"):
        _matches[0] += 1
        if _matches[0] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def write_with_faults(handle: BinaryIO, view: memoryview, path: Path) -> None:
    limit = _settings().get("enospc_after")
    if limit is None:
        handle.write(view)
        return
    room = int(limit) - _written[0]
    if room < view.nbytes:
        handle.write(view[: max(room, 0)])
        _written[0] += max(room, 0)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    handle.write(view)
    _written[0] += view.nbytes


def slow_build_seconds() -> float:
    return float(_settings().get("slow_build_s", "0") or 0)
