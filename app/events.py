"""Structured events (docs/events.md): ``logging`` records with ``extra={"kind", "kv"}``; the
library only emits, :mod:`app.cli` picks the formatter."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

CACHE_HIT = "c10.engine.cache.hit"
CACHE_MISS = "c10.engine.cache.miss"
SIDECAR_MISMATCH = "c10.engine.sidecar.mismatch"
PROVENANCE_MISMATCH = "c10.engine.provenance.mismatch"
PROVENANCE_UNTRACKED = "c10.engine.provenance.untracked"
CANDIDATE_PROMOTED = "c10.engine.candidate.promoted"
CANDIDATE_REJECTED = "c10.engine.candidate.rejected"
SIGNATURE_INVALID = "c10.engine.signature.invalid"
COMPILE_START = "c10.engine.compile.start"
COMPILE_PROGRESS = "c10.engine.compile.progress"
COMPILE_ERROR = "c10.engine.compile.error"
COMPILE_SUMMARY = "c10.engine.compile.summary"
ENGINE_BUILT = "c10.engine.built"
ENGINE_PATH_MISMATCH = "c10.engine.path.mismatch"
LOCK_WAIT = "c10.cache.lock.wait"
CACHE_DAMAGED = "c10.cache.damaged"
TEMP_CLEANED = "c10.cache.temp.cleaned"
HOST_PROBED = "c10.host.probed"
HOST_WARNING = "c10.host.warning"
HOST_GPU_UNUSED = "c10.host.gpu.unused"
MARKER_CLEARED = "c10.marker.cleared"
MARKER_REFUSED = "c10.marker.refused"
MARKER_WRITTEN = "c10.marker.written"
RUN_FAILED = "c10.run.failed"
PRUNED = "c10.cache.pruned"
HINT_UNWRITTEN = "c10.cache.hint.unwritten"
METRICS_WRITTEN = "c10.metrics.written"
METRICS_UNWRITTEN = "c10.metrics.unwritten"
ACCURACY_PASSED = "c10.engine.accuracy.passed"
ACCURACY_FAILED = "c10.engine.accuracy.failed"
PRECISION_CHECKED = "c10.engine.precision.checked"
PRECISION_PARTIAL = "c10.engine.precision.partial"
PRECISION_IGNORED = "c10.engine.precision.ignored"
DLA_CHECKED = "c10.engine.dla.checked"
DLA_PARTIAL = "c10.engine.dla.partial"
DLA_IGNORED = "c10.engine.dla.ignored"
BUILD_CONDITIONS = "c10.build.conditions"
BUILD_WORKSPACE_CLAMPED = "c10.build.workspace.clamped"
BUILD_THROTTLING = "c10.build.throttling"
BUILD_THERMAL_WAIT = "c10.build.thermal.wait"
BUILD_THERMAL_DONE = "c10.build.thermal.done"
BUILD_ETA = "c10.build.eta"
TENSORRT_LOG = "c10.engine.tensorrt.log"
TENSORRT_WARNING = "c10.engine.tensorrt.warning"
TENSORRT_OPSET = "c10.engine.tensorrt.opset"
TENSORRT_KEEP_FP32 = "c10.engine.tensorrt.keep_fp32"
TENSORRT_DEPRECATED = "c10.engine.tensorrt.deprecated"
TIMING_RESET = "c10.engine.timing_cache.reset"
TIMING_UNSAVED = "c10.engine.timing_cache.unsaved"
TIMING_SEEDED = "c10.engine.timing_cache.seeded"
CALIBRATION_UNSAVED = "c10.engine.calibration_cache.unsaved"
FLEET_STORED = "c10.fleet.candidates.stored"
FLEET_EXPORTED = "c10.fleet.exported"
FLEET_PUSHED = "c10.fleet.pushed"
FLEET_ABSENT = "c10.fleet.artifact.absent"
FLEET_TRUSTED = "c10.fleet.metadata.trusted"
FLEET_UNVERIFIABLE = "c10.fleet.candidates.unverifiable"


def emit(logger: logging.Logger, level: int, kind: str, message: str, **kv: Any) -> None:
    logger.log(level, message, extra={"kind": kind, "kv": kv})


def event_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    kind = getattr(record, "kind", None) or "c10.log"
    kv = getattr(record, "kv", None)
    return str(kind), dict(kv) if isinstance(kv, dict) else {}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object a line: ts, level, kind, msg, kv."""

    def format(self, record: logging.LogRecord) -> str:
        kind, kv = event_fields(record)
        doc: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname,
                               "kind": kind, "msg": record.getMessage(), "kv": kv}
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, sort_keys=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: ``12:00:01 WARNING message  key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        _, kv = event_fields(record)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = "  ".join(f"{k}={v}" for k, v in kv.items() if k not in {"phase_timings_s"})
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f"  [{extras}]" if extras else "")
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


#: Errors that stop a model and are raised right after: the CLI's closing line says the same.
_FAILURE_KINDS = frozenset({COMPILE_ERROR, ACCURACY_FAILED, PRECISION_IGNORED, DLA_IGNORED})
#: What a failing run emits between such an error and its end (``c10.run.failed``).
_WIND_DOWN_KINDS = frozenset({COMPILE_SUMMARY, MARKER_CLEARED, MARKER_REFUSED, METRICS_WRITTEN,
                              METRICS_UNWRITTEN})


class ProgressBarHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Text mode: progress events redrawn as one bar, each error said once. The CLI's closing
    ``engine-init: error:`` line replaces ``c10.run.failed``, and a model's failure event is
    held until the next event: dropped if that is the run's failure, else drawn."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self._bar_open = False
        self._held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        kind, kv = event_fields(record)
        if kind == RUN_FAILED:
            self._held.clear()
            return
        if kind in _FAILURE_KINDS:
            self._held.append(record)
            return
        if kind not in _WIND_DOWN_KINDS:
            self._release()
        if kind != COMPILE_PROGRESS:
            if self._bar_open:
                self.stream.write("\n")
                self._bar_open = False
            super().emit(record)
            return
        step, total = int(kv.get("step", 0)), max(int(kv.get("total", 1)), 1)
        width = 30
        filled = min(width, width * step // total)
        bar = "#" * filled + "-" * (width - filled)
        eta = kv.get("eta_s")  # the build governor's, for every build left
        left = f"  ~{eta:.0f} s left" if isinstance(eta, (int, float)) else ""
        self.stream.write(
            f"\r  {kv.get('model_name', '')} {str(kv.get('phase', ''))[:32]:<32} "
            f"[{bar}] {step}/{total}{left:<16}"
        )
        self.stream.flush()
        self._bar_open = True

    def _release(self) -> None:
        held, self._held = self._held, []
        for record in held:
            if self._bar_open:
                self.stream.write("\n")
                self._bar_open = False
            super().emit(record)

    def close(self) -> None:
        self._release()  # a held failure that no closing line repeated
        super().close()
