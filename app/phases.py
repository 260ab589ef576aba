"""What :class:`app.compiler.EngineCompiler` does for one model: :func:`make_plan` (artifact,
build settings, the provenance record to match), :func:`reuse` and :func:`build`.

A warm boot writes no record unless it must (a pre-installed engine, an ONNX model re-read, a new
gate result). A build writes a pending record first: until the final one replaces it, whatever
stands under the artifact's name (a publish a power cut interrupted) is refused (docs/cache.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events
from app.backends.base import InferenceRuntime
from app.cache.hashing import sidecar_path
from app.cache.record import (
    BUILDING,
    ProvenanceRecord,
    calibration_fingerprint,
    read_record,
    record_path,
    write_record,
)
from app.cache.reuse import Verdict
from app.cancel import call_cancellable
from app.config import BackboneSpec, EngineCompileRequest
from app.errors import ModelDataError
from app.host.identity import SKU_FIELDS, HardwareIdentity
from app.values import BuildConfig, CompileOutcome, EngineCacheEntry, EngineCompileResult
from app.verify.accuracy import enforce_precision, recorded_pass, run_gate

if TYPE_CHECKING:
    from app.governor.eta import Timeline


@dataclass(frozen=True)
class Plan:
    spec: BackboneSpec
    build_config: BuildConfig
    artifact: Path
    expected: ProvenanceRecord


@dataclass
class Step:
    """What every phase of one run shares; ``timings``: seconds per phase, over the models."""

    runtime: InferenceRuntime
    request: EngineCompileRequest
    logger: logging.Logger
    signing_key: bytes | None
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, fn: Callable[[], None]) -> None:
        t = time.perf_counter()
        fn()
        self.timings[phase] += time.perf_counter() - t

    def entry(self, plan: Plan, digest: str) -> EngineCacheEntry:
        host = self.request.host
        return EngineCacheEntry(plan.artifact, digest, host.sm, host.jetpack, host.trt,
                                plan.build_config.precision,
                                {"backend": plan.expected.backend,
                                 "backend_version": plan.expected.backend_version})

    def write_record(self, plan: Plan, verdict: Verdict, duration: float | None,
                     artifact: Path | None = None, accuracy: dict[str, Any] | None = None,
                     kept: ProvenanceRecord | None = None, **noted: Any) -> None:
        """The final record; ``kept``: a reused engine's stored record, whose build facts stay;
        ``noted``: this build's."""
        if kept is not None:
            duration = kept.build_duration_s
            noted = {"timing_cache": kept.timing_cache, "past_builds": kept.past_builds,
                     "precision_in_effect": kept.precision_in_effect, "onnx_io": kept.onnx_io,
                     "origin": kept.origin, **noted}
        record = dataclasses.replace(
            plan.expected, artifact=(artifact or plan.artifact).name, engine_sha256=verdict.digest,
            engine_size=verdict.size, onnx_path=str(plan.spec.onnx_path),
            onnx_sha256=verdict.onnx.sha256, onnx_stat=verdict.onnx.stat,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_duration_s=None if duration is None else round(duration, 4), accuracy=accuracy,
            **noted)
        write_record(artifact or plan.artifact, record, self.signing_key)


def make_plan(runtime: InferenceRuntime, spec: BackboneSpec, request: EngineCompileRequest,
              identity: HardwareIdentity | None) -> Plan:
    precision = spec.precision or request.precision
    name = runtime.artifact_name(spec.model_name, precision)
    shapes = spec.shapes()
    calibration = (request.calibration_path / spec.model_name
                   if request.calibration_path is not None else None)
    config = BuildConfig(
        precision=precision, model_name=spec.model_name,
        engine_path=request.cache_root / name, input_shapes=shapes,
        workspace_mb=request.workspace_mb, calibration_dir=calibration,
        cache_root=request.cache_root, optimization_level=request.optimization_level,
        dla_core=spec.dla_core, verify=spec.verify, keep_fp32=spec.keep_fp32,
        cuda_device=request.host.cuda_device,
    )
    settings: dict[str, Any] = dict(config.fingerprint_fields())
    if precision.value == "int8":
        settings["calibration"] = calibration_fingerprint(calibration)
    host = request.host
    expected = ProvenanceRecord.build(
        model_name=spec.model_name, settings=settings, backend=runtime.name,
        backend_version=runtime.version(), device_name=runtime.device_name(),
        host={"sm": host.sm, "jetpack": host.jetpack, "trt": host.trt, "l4t": host.l4t},
        sku={name: getattr(identity, name) for name in SKU_FIELDS} if identity else {},
        hardware=identity.as_dict() if identity else {})
    return Plan(spec, config, request.cache_root / name, expected)


def reuse(step: Step, plan: Plan, verdict: Verdict) -> EngineCompileResult:
    name = plan.spec.model_name
    assert verdict.digest is not None
    stored = read_record(plan.artifact, step.signing_key).record
    accuracy = stored.accuracy if stored is not None else None
    rechecked = False
    if plan.spec.verify == "accuracy":
        accuracy = recorded_pass(accuracy, plan.spec, plan.build_config,
                                 engine_sha256=verdict.digest, onnx_sha256=verdict.onnx.sha256)
        if accuracy is None:  # new tolerance or inputs: a new check, not a rebuild
            rechecked = True
            accuracy = run_gate(step.runtime, plan.artifact, plan.spec, plan.build_config,
                                step.logger, engine_sha256=verdict.digest,
                                onnx_sha256=verdict.onnx.sha256)
    if verdict.reason == "hit-untracked" or verdict.onnx.rehashed or rechecked:
        if verdict.reason == "hit-untracked":
            events.emit(step.logger, logging.WARNING, events.PROVENANCE_UNTRACKED,
                        f"{name}: reusing {plan.artifact.name} ({verdict.detail}); "
                        "recording the current inputs", model_name=name, detail=verdict.detail)
        adopted = {"origin": "adopted"} if verdict.reason == "hit-untracked" else {}
        step.timed("record", lambda: step.write_record(plan, verdict, None, None,
                                                       accuracy or None, stored, **adopted))
    events.emit(step.logger, logging.INFO, events.CACHE_HIT,
                f"{name}: reusing {plan.artifact.name}", model_name=name,
                engine_path=str(plan.artifact), sha256=verdict.digest)
    return EngineCompileResult(step.entry(plan, verdict.digest), CompileOutcome.REUSED, None,
                               accuracy if plan.spec.verify == "accuracy" else None,
                               stored.precision_in_effect if stored else None)


def build(step: Step, plan: Plan, verdict: Verdict, timeline: Timeline) -> EngineCompileResult:
    """Build ``plan``'s engine; a runtime's error propagates after ``c10.engine.compile.error``."""
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
        _unpublish(plan, verdict)
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
    """The ONNX model's interface for the record; None without ``onnx``, or for another format."""
    try:
        from app.backends.onnx_model import inspect_model

        return inspect_model(plan.spec.onnx_path, plan.spec.model_name).to_json()
    except (ImportError, ModelDataError):
        return None


def _govern(step: Step, plan: Plan) -> BuildConfig:
    """The governor's admission (docs/governor.md); a clamp changes this build only, not the
    provenance, so that the next boot reuses the engine."""
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
    """(accuracy gate's report, precision in effect) of a just-published engine."""
    assert verdict.digest is not None
    try:
        effect = enforce_precision(step.runtime, plan.spec.onnx_path, artifact,
                                   plan.build_config, step.logger)
        if plan.spec.verify != "accuracy":
            return None, effect
        return run_gate(step.runtime, artifact, plan.spec, plan.build_config, step.logger,
                        engine_sha256=verdict.digest, onnx_sha256=verdict.onnx.sha256), effect
    except BaseException:
        _unpublish(plan, verdict, artifact, sidecar_path(artifact))
        raise


def _unpublish(plan: Plan, verdict: Verdict, *published: Path) -> None:
    """Remove what a failed build published; its pending record too where nothing stood before
    (else it stays, so that the next run rebuilds)."""
    for path in published:
        path.unlink(missing_ok=True)
    if verdict.reason == "absent":
        record_path(plan.artifact).unlink(missing_ok=True)
