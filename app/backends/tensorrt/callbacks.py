"""Exceptions raised in the Python callbacks that TensorRT calls during a build.

TensorRT's Python bindings run every callback (the logger's ``log``, the calibrator's
``get_batch`` / ``read_calibration_cache`` / ``write_calibration_cache``, the progress monitor's
``phase_start`` / ``step_complete`` / ``phase_finish``) inside a C++ wrapper that catches any
exception, prints it and returns its failure value: ``get_batch`` then means "no more batches"
(a bad batch k would calibrate on batches 0..k-1), ``step_complete`` "cancel the build". So
each callback of ours catches its own exception and records it here, stops the work it feeds,
and the runtime re-raises the first one once ``build_serialized_network`` returns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import EngineBuildError, EngineInitError


class CallbackErrors:
    """The first exception raised by any of one build's callbacks (they may run on TensorRT's
    threads, hence the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: tuple[str, BaseException] | None = None

    @property
    def failed(self) -> bool:
        return self._first is not None

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Record, never propagate, an exception of the block: TensorRT would swallow it."""
        try:
            yield
        except BaseException as exc:
            with self._lock:
                if self._first is None:
                    self._first = (where, exc)

    def raise_first(self, model_name: str) -> None:
        """Re-raise the recorded exception: ours as is, anything else as EngineBuildError."""
        if self._first is None:
            return
        where, exc = self._first
        if isinstance(exc, EngineInitError):
            raise exc
        raise EngineBuildError(f"{model_name}: {where} failed during the TensorRT build: "
                               f"{type(exc).__name__}: {exc}",
                               hint="run with --debug for the traceback") from exc
