"""Build one engine: the governor's admission, a pending record, the runtime's build, then
the checks of what was built (the precision asked, the accuracy gate) and the final record.

A pending record goes first: until the final one replaces it, whatever stands under the
artifact's name (an old engine, or a new one whose publishing a power cut interrupted) is
refused. A build or a check that fails removes what this build published and, when nothing
stood there before, the pending record too; otherwise the pending record stays, so that the
next run rebuilds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events
from app.cache.record import BUILDING, record_path, write_record
from app.cache.reuse import Verdict
from app.cache.sidecar import sidecar_path
from app.cancel import call_cancellable
from app.errors import ModelDataError
from app.phases.plan import Plan, Step
from app.values import BuildConfig, CompileOutcome, EngineCompileResult
from app.verify.accuracy import enforce_precision, run_gate

if TYPE_CHECKING:
    from app.governor.eta import Timeline


def build(step: Step, plan: Plan, verdict: Verdict, timeline: Timeline) -> EngineCompileResult:
    """Build ``plan``'s engine (``verdict``: why the cached one was not reused); the runtime's
    errors propagate unchanged after one ``c10.engine.compile.error`` event."""
    name, runtime = plan.spec.model_name, step.runtime
    build_config = timeline.start(name, runtime, _govern(step, plan))
    noted = timeline.noted(name)  # the build history, carried into both records
    events.emit(step.logger, logging.INFO, events.COMPILE_START, f"{name}: compiling",
                model_name=name, precision=plan.build_config.precision.value)
    write_record(plan.artifact, dataclasses.replace(plan.expected, status=BUILDING, **noted),
                 step.signing_key)
    t = time.perf_counter()
    try:
        entry = call_cancellable(lambda: runtime.compile_engine(plan.spec.onnx_path, build_config))
    except Exception as exc:
        if verdict.reason == "absent":  # nothing was there before: leave nothing behind
            record_path(plan.artifact).unlink(missing_ok=True)
        given, own = step.request.calibration_path, plan.build_config.calibration_dir
        # calibration_path: the folder the request names, as log consumers match on it.
        events.emit(step.logger, logging.ERROR, events.COMPILE_ERROR,
                    f"{name}: {type(exc).__name__}: {exc}", model_name=name,
                    calibration_path=given and str(given), calibration_dir=own and str(own),
                    error_class=type(exc).__name__)
        raise
    duration = time.perf_counter() - t
    step.timings["compile"] += duration
    published = Path(entry.engine_path)
    if published != plan.artifact:
        events.emit(step.logger, logging.WARNING, events.ENGINE_PATH_MISMATCH,
                    f"{name}: runtime published {published}, not {plan.artifact}; "
                    "it will not be found by the next run", model_name=name)
    verdict.digest = entry.sha256_hex
    with contextlib.suppress(OSError):  # a runtime that published elsewhere: warned above
        verdict.size = os.stat(published).st_size
    accuracy, effect = _check_built(step, plan, verdict, published)
    step.timed("record", lambda: step.write_record(
        plan, verdict, duration, published, accuracy, None, precision_in_effect=effect,
        onnx_io=_interface(plan), origin="built", **noted))
    events.emit(step.logger, logging.INFO, events.ENGINE_BUILT,
                f"{name}: built {published.name} in {duration:.2f} s", model_name=name,
                engine_path=str(published), sha256=entry.sha256_hex,
                duration_s=round(duration, 4))
    return EngineCompileResult(entry, CompileOutcome.BUILT, duration, accuracy, effect)


def _interface(plan: Plan) -> dict[str, Any] | None:
    """The ONNX model's interface for the record (the backends read it for the build already,
    so this is no second parse); None when it cannot be read (no ``onnx`` installed beside a
    plain runtime, or a model format of that runtime's own)."""
    try:
        from app.backends.onnx_model import inspect_model

        return inspect_model(plan.spec.onnx_path, plan.spec.model_name).to_json()
    except (ImportError, ModelDataError):
        return None


def _govern(step: Step, plan: Plan) -> BuildConfig:
    """The build governor before a build: conditions event, thermal wait, memory refusal
    (exit 69), workspace clamp (to a discrete GPU's free memory where the backend can read it).
    The clamp changes this build only: the provenance keeps the asked workspace, so the next
    boot reuses the engine."""
    settings = step.request.governor
    if settings is None:
        return plan.build_config
    from app.governor.admission import govern_build

    config = plan.build_config
    admission = govern_build(plan.spec.model_name, plan.spec.onnx_path, config.workspace_mb,
                             settings, step.logger,
                             device_free=step.runtime.device_free_memory())
    if admission.workspace_mb is None or not admission.clamped:
        return config
    return dataclasses.replace(config, workspace_mb=admission.workspace_mb)


def _check_built(step: Step, plan: Plan, verdict: Verdict,
                 artifact: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The precision check (fp16, int8) and the accuracy gate on a just-published engine:
    (accuracy report, precision in effect); on failure, unpublish what this build published
    (the engine and its sidecar) and leave the pending record, so that the next run rebuilds."""
    assert verdict.digest is not None
    try:
        effect = enforce_precision(step.runtime, plan.spec.onnx_path, artifact,
                                   plan.build_config, step.logger)
        if plan.spec.verify != "accuracy":
            return None, effect
        return run_gate(step.runtime, artifact, plan.spec, plan.build_config, step.logger,
                        engine_sha256=verdict.digest, onnx_sha256=verdict.onnx.sha256), effect
    except BaseException:
        for path in (artifact, sidecar_path(artifact)):
            path.unlink(missing_ok=True)
        if verdict.reason == "absent":  # nothing was there before: leave nothing behind
            record_path(plan.artifact).unlink(missing_ok=True)
        raise
