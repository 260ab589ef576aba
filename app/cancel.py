"""Cancellation: SIGTERM/SIGINT stop a run promptly and leave no partial file.

The signal handler sets :data:`CANCEL` (read by publishing, which then starts no new file, and
by TensorRT's progress monitor, which then stops the build) and raises
:class:`BuildCancelledError` once in the main thread so that every ``finally`` runs: temp files
are swept and the lock is released before the process exits 128 + signal.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from app.errors import BuildCancelledError

__all__ = [
    "CANCEL",
    "call_cancellable",
    "cancellable_sleep",
    "cancelled_error",
    "install_signal_handlers",
]

_T = TypeVar("_T")

CANCEL = threading.Event()
#: After a cancel, how long :func:`call_cancellable` waits for its worker to end: a TensorRT 10
#: build stops at its next step and then frees its GPU buffers; a TensorRT 8 build cannot be
#: stopped and is ended with the process. Short enough for a 2 s exit.
CANCEL_GRACE_S = 1.0
_SIGNUM: list[int] = []


def cancelled_error() -> BuildCancelledError:
    return BuildCancelledError(_SIGNUM[0] if _SIGNUM else signal.SIGTERM)


def _handler(signum: int, frame: FrameType | None) -> None:
    first = not CANCEL.is_set()
    _SIGNUM.append(signum)
    CANCEL.set()
    if first:  # a second signal must not interrupt the cleanup the first one started
        raise BuildCancelledError(signum)


def install_signal_handlers() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _handler)


def cancellable_sleep(seconds: float) -> None:
    """Sleep, but raise the cancellation error as soon as a cancel is requested."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if CANCEL.is_set():
            raise cancelled_error()
        time.sleep(0.02)


def call_cancellable(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a worker thread so that a cancel request is answered at once.

    A build inside TensorRT or ONNX Runtime holds its thread in C code, where Python signal
    handlers cannot run; waiting here instead keeps the main thread responsive. The worker is a
    daemon: on cancel it gets :data:`CANCEL_GRACE_S` to end (TensorRT's progress monitor stops
    it) and is then abandoned; publishing refuses to start new files once :data:`CANCEL` is set.
    """
    box: dict[str, Any] = {}
    # An event, not Thread.join: a join that the signal handler interrupts marks the thread as
    # ended although it runs on (CPython bpo-45274), and the grace wait would then not wait.
    finished = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name="build", daemon=True).start()
    try:
        while not finished.wait(0.05):
            if CANCEL.is_set():
                raise cancelled_error()
    except BuildCancelledError:
        finished.wait(CANCEL_GRACE_S)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
