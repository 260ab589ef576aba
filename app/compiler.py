"""EngineCompiler: plan each backbone's artifact, reuse what verifies, build the rest.

For a request it (1) names every artifact, (2) takes the cache lock (unless the caller holds
it and passes it), sweeps temp files left by killed runs and checks every artifact in parallel
threads (:mod:`app.cache.reuse`), (3) calls the runtime for each miss in order, stopping at the
first failure, and (4) writes each new provenance record. Runtime errors propagate unchanged
after one ``c10.engine.compile.error`` event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import InferenceRuntime, PlainRuntime, as_inference_runtime
from app.cache.hashing import EarlyDigests
from app.cache.lock import CacheLock
from app.cache.publish import sweep_temp_files
from app.cache.record import (
    BUILDING,
    ProvenanceRecord,
    calibration_fingerprint,
    read_record,
    record_path,
    write_record,
)
from app.cache.reuse import Verdict, check_artifact
from app.cache.sidecar import sidecar_path
from app.cancel import call_cancellable, checkpoint, map_cancellable
from app.errors import CacheWriteError, ModelDataError
from app.host.identity import HardwareIdentity
from app.values import (
    BackboneSpec,
    BuildConfig,
    CompileOutcome,
    EngineCacheEntry,
    EngineCompileRequest,
    EngineCompileResult,
    InputProfile,
)
from app.verify import gate

__all__ = ["EngineCompiler"]

_LOG = logging.getLogger("engine_init")
#: Engines verified at once; beyond this, threads only add memory (a buffer each).
_MAX_VERIFY_THREADS = 16
_DAMAGE = (logging.WARNING, events.SIDECAR_MISMATCH)
_STALE = (logging.WARNING, events.PROVENANCE_MISMATCH)
#: The event of each miss reason that is more than "absent": (level, kind).
_MISS = {"sidecar": _DAMAGE, "size": _DAMAGE, "not-a-file": _DAMAGE, "record-corrupt": _STALE,
         "interrupted": _STALE, "provenance": (logging.INFO, events.PROVENANCE_MISMATCH),
         "signature": (logging.ERROR, events.SIGNATURE_INVALID),
         "untracked": (logging.WARNING, events.PROVENANCE_UNTRACKED)}


@dataclass(frozen=True)
class _Plan:
    """One model's artifact: where it lives, how it is built, the record it must match."""

    spec: BackboneSpec
    build_config: BuildConfig
    artifact: Path
    expected: ProvenanceRecord


class EngineCompiler:
    """Makes a corpus of engines ready; see the module docstring."""

    def __init__(
        self,
        inference_runtime: InferenceRuntime | PlainRuntime,
        logger: logging.Logger | None = None,
        *,
        signing_key: bytes | None = None,
        identity: HardwareIdentity | None = None,
        trust_untracked: bool = True,
    ) -> None:
        self.runtime = inference_runtime
        self.logger = logger or _LOG
        self.signing_key = signing_key
        #: This host's exact hardware (app.host.identity), recorded with every engine and
        #: compared by its SKU fields; None records none (callers without a probed host).
        self.identity = identity
        #: Whether an engine of unknown origin (no record, or one without the identity) is reused.
        self.trust_untracked = trust_untracked
        #: Seconds spent per phase in the last call (lock_wait, verify, compile, record, total).
        self.last_phase_timings: dict[str, float] = {}

    # -- public ---------------------------------------------------------------------------
    def compile_engines_for_corpus(
        self, request: EngineCompileRequest, *, held_lock: CacheLock | None = None,
        early: EarlyDigests | None = None,
    ) -> tuple[EngineCompileResult, ...]:
        """Reuse or build every backbone of ``request``. ``held_lock``: the cache lock, which
        the caller took (and keeps after this call); without it, this takes it for the call.
        ``early``: engine digests hashed before this call (:mod:`app.cache.prehash`), each
        taken only for the very file it verifies."""
        started = time.perf_counter()
        timings = dict.fromkeys(("lock_wait", "verify", "compile", "record"), 0.0)
        self.last_phase_timings = timings
        results: list[EngineCompileResult] = []
        try:
            if request.backbones:
                results = self._run(request, timings, held_lock, early)
        finally:
            timings["total"] = time.perf_counter() - started
            self._summary(request, results, timings)
        return tuple(results)

    def check_corpus(
        self, request: EngineCompileRequest
    ) -> list[tuple[BackboneSpec, Path, Verdict]]:
        """Read-only: what a run would decide for each backbone (no lock, no writes)."""
        runtime = as_inference_runtime(self.runtime, request.host)
        plans = [self._plan(runtime, spec, request) for spec in request.backbones]
        verdicts = self._check_all(request, plans)
        return [(p.spec, p.artifact, v) for p, v in zip(plans, verdicts, strict=True)]

    # -- phases -----------------------------------------------------------------------------
    def _run(
        self, request: EngineCompileRequest, timings: dict[str, float], held: CacheLock | None,
        early: EarlyDigests | None,
    ) -> list[EngineCompileResult]:
        runtime = as_inference_runtime(self.runtime, request.host)
        plans = [self._plan(runtime, spec, request) for spec in request.backbones]
        if held is not None and not held.held:
            raise ValueError("held_lock: the caller passed a cache lock it does not hold")
        lock = contextlib.nullcontext(held) if held is not None else CacheLock(
            request.cache_root, request.lock_timeout_s, self.logger)
        with lock as taken:
            timings["lock_wait"] = 0.0 if held is not None else taken.waited_s
            try:
                return self._under_lock(runtime, request, plans, timings, early)
            finally:
                # Whatever stopped us, leave no temp file behind (we hold the lock: they are ours).
                for path in sweep_temp_files(request.cache_root):
                    events.emit(self.logger, logging.DEBUG, events.TEMP_CLEANED,
                                f"removed temp file {path.name}", path=str(path))

    def _under_lock(
        self, runtime: InferenceRuntime, request: EngineCompileRequest, plans: list[_Plan],
        timings: dict[str, float], early: EarlyDigests | None,
    ) -> list[EngineCompileResult]:
        t = time.perf_counter()
        verdicts = self._check_all(request, plans, early)
        timings["verify"] = time.perf_counter() - t
        for verdict in verdicts:  # before any work: nothing of ours may replace a folder
            if verdict.reason == "folder":
                raise CacheWriteError(f"{verdict.detail} where engine-init keeps an artifact or "
                                      "its companions; it may hold someone's data, so it is "
                                      "left alone", hint="move it out of the cache folder")
        results = []
        for plan, verdict in zip(plans, verdicts, strict=True):
            checkpoint()
            if verdict.reuse:
                results.append(self._reuse(runtime, plan, verdict, request, timings))
            else:
                self._report_miss(plan, verdict)
                promoted = self._promote(runtime, plan, verdict, request, early)
                results.append(promoted or self._build(runtime, plan, verdict, request, timings))
        return results

    def _plan(self, runtime: InferenceRuntime, spec: BackboneSpec,
              request: EngineCompileRequest) -> _Plan:
        precision = spec.precision or request.precision
        name = runtime.artifact_name(spec.model_name, precision)
        shapes: dict[str | None, InputProfile] = {k: v for k, v in spec.input_shapes.items()}
        if spec.expected_input_shape is not None:
            shapes[None] = InputProfile.fixed(tuple(spec.expected_input_shape))
        calibration = (request.calibration_path / spec.model_name
                       if request.calibration_path is not None else None)
        config = BuildConfig(
            precision=precision, model_name=spec.model_name,
            engine_path=request.cache_root / name, input_shapes=shapes,
            workspace_mb=request.workspace_mb, calibration_dir=calibration,
            cache_root=request.cache_root, optimization_level=request.optimization_level,
            dla_core=spec.dla_core, verify=spec.verify,
        )
        settings: dict[str, Any] = dict(config.fingerprint_fields())
        if precision.value == "int8":
            settings["calibration"] = calibration_fingerprint(calibration)
        host = request.host
        expected = ProvenanceRecord.build(
            model_name=spec.model_name, settings=settings, backend=runtime.name,
            backend_version=runtime.version(), device_name=runtime.device_name(),
            host={"sm": host.sm, "jetpack": host.jetpack, "trt": host.trt, "l4t": host.l4t},
            sku=self.identity.sku_facts() if self.identity else {},
            hardware=self.identity.as_dict() if self.identity else {})
        return _Plan(spec, config, request.cache_root / name, expected)

    def _check_all(self, request: EngineCompileRequest, plans: list[_Plan],
                   early: EarlyDigests | None = None) -> list[Verdict]:
        def one(plan: _Plan) -> Verdict:
            try:
                return check_artifact(plan.artifact, plan.spec.onnx_path, plan.expected,
                                      strict_onnx=request.strict_onnx_hash, key=self.signing_key,
                                      early=early, trust_untracked=self.trust_untracked)
            except (OSError, ValueError) as exc:
                raise ModelDataError(
                    f"backbones[{plan.spec.model_name}].onnx_path: cannot read "
                    f"{plan.spec.onnx_path}: {getattr(exc, 'strerror', None) or exc}",
                    hint="check the path and the models mount",
                ) from exc

        # One thread per engine, not one per core: an engine's sha256 is sequential, so a pool
        # of one worker per core takes two engines' time for three engines on two cores, while
        # three threads shared by the kernel take one and a half (bench/: 0.8x the pool).
        # hashlib releases the GIL while it hashes; each thread holds a 256 KiB buffer. The
        # main thread only waits, so that a signal ends the run whatever a hash is doing.
        return map_cancellable(one, plans, _MAX_VERIFY_THREADS)

    def _report_miss(self, plan: _Plan, verdict: Verdict) -> None:
        name = plan.spec.model_name
        if verdict.reason in _MISS:
            what = ", ".join(verdict.changed) or verdict.detail or verdict.reason
            if verdict.changed and verdict.detail:  # e.g. which SKU facts differ, and how
                what = verdict.detail
            events.emit(self.logger, *_MISS[verdict.reason],
                        f"{name}: cached {plan.artifact.name} rejected ({what}); rebuilding",
                        model_name=name, engine_path=str(plan.artifact), reason=verdict.reason,
                        changed=verdict.changed, detail=verdict.detail)
        events.emit(self.logger, logging.INFO, events.CACHE_MISS,
                    f"{name}: no reusable engine ({verdict.reason}); building",
                    model_name=name, engine_path=str(plan.artifact), reason=verdict.reason)

    def _reuse(self, runtime: InferenceRuntime, plan: _Plan, verdict: Verdict,
               request: EngineCompileRequest, timings: dict[str, float]) -> EngineCompileResult:
        name = plan.spec.model_name
        assert verdict.digest is not None
        stored = read_record(plan.artifact, self.signing_key).record
        accuracy = stored.accuracy if stored is not None else None
        rechecked = False
        if plan.spec.verify == "accuracy":
            accuracy = gate.recorded_pass(accuracy, plan.spec, plan.build_config,
                                          engine_sha256=verdict.digest,
                                          onnx_sha256=verdict.onnx.sha256)
            if accuracy is None:  # new tolerance or inputs: a new check, not a rebuild
                rechecked = True
                accuracy = gate.run_gate(runtime.name, plan.artifact, plan.spec,
                                         plan.build_config, self.logger,
                                         engine_sha256=verdict.digest,
                                         onnx_sha256=verdict.onnx.sha256)
        if verdict.reason == "hit-untracked" or verdict.onnx.rehashed or rechecked:
            # Track pre-installed engines from now on, and remember the ONNX stat facts so that
            # the next boot need not re-read an unchanged model.
            if verdict.reason == "hit-untracked":
                events.emit(self.logger, logging.WARNING, events.PROVENANCE_UNTRACKED,
                            f"{name}: reusing {plan.artifact.name} ({verdict.detail}); "
                            "recording the current inputs", model_name=name,
                            detail=verdict.detail)
            self._timed(timings, "record", lambda: self._write_record(
                plan, verdict, None, None, accuracy or None,
                stored.build_duration_s if stored else None))
        events.emit(self.logger, logging.INFO, events.CACHE_HIT,
                    f"{name}: reusing {plan.artifact.name}", model_name=name,
                    engine_path=str(plan.artifact), sha256=verdict.digest)
        return EngineCompileResult(self._entry(plan, verdict.digest, request),
                                   CompileOutcome.REUSED, None,
                                   accuracy if plan.spec.verify == "accuracy" else None)

    def _build(self, runtime: InferenceRuntime, plan: _Plan, verdict: Verdict,
               request: EngineCompileRequest, timings: dict[str, float]) -> EngineCompileResult:
        name = plan.spec.model_name
        build_config = self._govern(plan, request)
        events.emit(self.logger, logging.INFO, events.COMPILE_START, f"{name}: compiling",
                    model_name=name, precision=plan.build_config.precision.value)
        # A pending record first: until the final one replaces it, whatever stands under this
        # name (an old engine, or a new one whose publishing a power cut interrupted) is refused.
        write_record(plan.artifact, dataclasses.replace(plan.expected, status=BUILDING),
                     self.signing_key)
        t = time.perf_counter()
        try:
            entry = call_cancellable(
                lambda: runtime.compile_engine(plan.spec.onnx_path, build_config))
        except Exception as exc:
            if verdict.reason == "absent":  # nothing was there before: leave nothing behind
                record_path(plan.artifact).unlink(missing_ok=True)
            given, own = request.calibration_path, plan.build_config.calibration_dir
            # calibration_path: the folder the request names, as log consumers match on it.
            events.emit(self.logger, logging.ERROR, events.COMPILE_ERROR,
                        f"{name}: {type(exc).__name__}: {exc}", model_name=name,
                        calibration_path=given and str(given), calibration_dir=own and str(own),
                        error_class=type(exc).__name__)
            raise
        duration = time.perf_counter() - t
        timings["compile"] += duration
        if Path(entry.engine_path) != plan.artifact:
            events.emit(self.logger, logging.WARNING, events.ENGINE_PATH_MISMATCH,
                        f"{name}: runtime published {entry.engine_path}, not {plan.artifact}; "
                        "it will not be found by the next run", model_name=name)
        verdict.digest = entry.sha256_hex
        with contextlib.suppress(OSError):  # a runtime that published elsewhere: warned above
            verdict.size = os.stat(entry.engine_path).st_size
        accuracy = self._gate_built(runtime, plan, verdict, Path(entry.engine_path))
        self._timed(timings, "record", lambda: self._write_record(
            plan, verdict, duration, Path(entry.engine_path), accuracy))
        events.emit(self.logger, logging.INFO, events.ENGINE_BUILT,
                    f"{name}: built {Path(entry.engine_path).name} in {duration:.2f} s",
                    model_name=name, engine_path=str(entry.engine_path),
                    sha256=entry.sha256_hex, duration_s=round(duration, 4))
        return EngineCompileResult(entry, CompileOutcome.BUILT, duration, accuracy)

    def _govern(self, plan: _Plan, request: EngineCompileRequest) -> BuildConfig:
        """The build governor before a build: conditions event, thermal wait, memory refusal
        (exit 69), workspace clamp. The clamp changes this build only: the provenance keeps the
        asked workspace, so the next boot reuses the engine."""
        if request.governor is None:
            return plan.build_config
        from app.governor.admission import govern_build

        config = plan.build_config
        admission = govern_build(plan.spec.model_name, plan.spec.onnx_path, config.workspace_mb,
                                 request.governor, self.logger)
        if admission.workspace_mb is None or not admission.clamped:
            return config
        return dataclasses.replace(config, workspace_mb=admission.workspace_mb)

    def _gate_built(self, runtime: InferenceRuntime, plan: _Plan, verdict: Verdict,
                    artifact: Path) -> dict[str, Any] | None:
        """The accuracy gate on a just-published engine; on failure, unpublish what this build
        published (the engine and its sidecar) and leave the pending record, so that the next
        run rebuilds."""
        if plan.spec.verify != "accuracy":
            return None
        assert verdict.digest is not None
        try:
            return gate.run_gate(runtime.name, artifact, plan.spec, plan.build_config,
                                 self.logger, engine_sha256=verdict.digest,
                                 onnx_sha256=verdict.onnx.sha256)
        except BaseException:
            for path in (artifact, sidecar_path(artifact)):
                path.unlink(missing_ok=True)
            if verdict.reason == "absent":  # nothing was there before: leave nothing behind
                record_path(plan.artifact).unlink(missing_ok=True)
            raise

    def _promote(self, runtime: InferenceRuntime, plan: _Plan, verdict: Verdict,
                 request: EngineCompileRequest, early: EarlyDigests | None
                 ) -> EngineCompileResult | None:
        """A fleet candidate of this SKU published instead of a build; None: build."""
        if self.identity is None or verdict.reason == "folder":
            return None
        sku = self.identity.sku_key()
        if not (request.cache_root / "candidates" / sku).is_dir():
            return None  # the usual case: the fleet code is not even loaded
        from app.fleet.promote import promote

        name = plan.spec.model_name
        pending = dataclasses.replace(plan.expected, status=BUILDING)
        got = promote(runtime, request.cache_root, sku, plan.artifact, plan.expected,
                      verdict.onnx.sha256, plan.spec.onnx_path, plan.build_config,
                      lambda: write_record(plan.artifact, pending, self.signing_key), early)
        if got is None:
            return None
        if got.digest is None:
            events.emit(self.logger, logging.WARNING, events.CANDIDATE_REJECTED,
                        f"{name}: candidate {got.candidate.name} rejected ({got.reason}); "
                        "building here", model_name=name, candidate=str(got.candidate),
                        reason=got.reason)
            return None
        verdict.digest, verdict.size = got.digest, got.size
        self._write_record(plan, verdict, None, None)
        events.emit(self.logger, logging.INFO, events.CANDIDATE_PROMOTED,
                    f"{name}: promoted candidate {got.candidate.name} for {sku}", model_name=name,
                    engine_path=str(plan.artifact), sha256=got.digest, sku=sku)
        return EngineCompileResult(self._entry(plan, got.digest, request),
                                   CompileOutcome.PROMOTED, None)

    # -- helpers ----------------------------------------------------------------------------
    def _write_record(self, plan: _Plan, verdict: Verdict, duration: float | None,
                      artifact: Path | None, accuracy: dict[str, Any] | None = None,
                      kept_duration: float | None = None) -> None:
        if duration is None:
            duration = kept_duration
        record = dataclasses.replace(
            plan.expected, artifact=(artifact or plan.artifact).name, engine_sha256=verdict.digest,
            engine_size=verdict.size, onnx_path=str(plan.spec.onnx_path),
            onnx_sha256=verdict.onnx.sha256, onnx_stat=verdict.onnx.stat,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_duration_s=None if duration is None else round(duration, 4), accuracy=accuracy)
        write_record(artifact or plan.artifact, record, self.signing_key)

    def _entry(self, plan: _Plan, digest: str, request: EngineCompileRequest) -> EngineCacheEntry:
        host = request.host
        return EngineCacheEntry(plan.artifact, digest, host.sm, host.jetpack, host.trt,
                                plan.build_config.precision,
                                {"backend": plan.expected.backend,
                                 "backend_version": plan.expected.backend_version})

    @staticmethod
    def _timed(timings: dict[str, float], phase: str, fn: Callable[[], None]) -> None:
        t = time.perf_counter()
        fn()
        timings[phase] += time.perf_counter() - t

    def _summary(self, request: EngineCompileRequest, results: list[EngineCompileResult],
                 timings: dict[str, float]) -> None:
        built = sum(r.outcome is CompileOutcome.BUILT for r in results)
        promoted = sum(r.outcome is CompileOutcome.PROMOTED for r in results)
        reused = len(results) - built - promoted
        also = f", {promoted} promoted" if promoted else ""
        events.emit(self.logger, logging.INFO, events.COMPILE_SUMMARY,
                    f"{built} built, {reused} reused{also} of {len(request.backbones)}",
                    engines_built=built, engines_reused=reused, engines_promoted=promoted,
                    total=len(request.backbones),
                    phase_timings_s={k: round(v, 4) for k, v in timings.items()})
