"""Build progress from TensorRT's ``IProgressMonitor`` (10.x), as throttled events; cancel.

TensorRT calls the monitor from its build threads, so state is guarded by a lock. Returning
False from ``step_complete`` asks TensorRT to stop the build, which is how SIGTERM/SIGINT
cancel a build in progress, and how a failed callback (recorded in :class:`CallbackErrors`,
never raised into TensorRT) stops a build that could only end in that error. ``fields``
(``BuildConfig.progress_fields``) adds its fields to every event: the build governor's ETA.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app import events
from app.backends.tensorrt.callbacks import CallbackErrors
from app.cancel import CANCEL

#: At most one progress event per phase in this interval (first and last steps always pass).
MIN_INTERVAL_S = 0.5


def make_progress_monitor(trt: Any, logger: logging.Logger, model_name: str,
                          errors: CallbackErrors,
                          fields: Callable[[], dict[str, Any]] | None = None) -> Any:
    class EventProgressMonitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._totals: dict[str, int] = {}
            self._last: dict[str, float] = {}

        def _emit(self, phase: str, step: int, force: bool) -> None:
            now = time.monotonic()
            with self._lock:
                total = self._totals.get(phase, 0)
                if not force and now - self._last.get(phase, 0.0) < MIN_INTERVAL_S:
                    return
                self._last[phase] = now
            events.emit(logger, logging.INFO, events.COMPILE_PROGRESS,
                        f"{model_name}: {phase} {step}/{total}", model_name=model_name,
                        phase=phase, step=step, total=total, **(fields() if fields else {}))

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with errors.guard("the progress monitor's phase_start"):
                with self._lock:
                    self._totals[phase_name] = int(num_steps)
                self._emit(phase_name, 0, force=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with errors.guard("the progress monitor's step_complete"):
                total = self._totals.get(phase_name, 0)
                self._emit(phase_name, int(step) + 1, force=int(step) + 1 >= total)
            return not (CANCEL.is_set() or errors.failed)

        def phase_finish(self, phase_name: str) -> None:
            with errors.guard("the progress monitor's phase_finish"), self._lock:
                self._totals.pop(phase_name, None)
                self._last.pop(phase_name, None)

    return EventProgressMonitor()
