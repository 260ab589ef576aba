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
    daemon: on cancel it is abandoned (TensorRT's progress monitor stops it) and publishing
    refuses to start new files once :data:`CANCEL` is set.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, name="build", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
        if CANCEL.is_set():
            raise cancelled_error()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
