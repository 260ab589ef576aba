"""EngineCompiler: plan every artifact, check them all in parallel under the cache lock, then
per model in order reuse, promote a fleet candidate or build (:mod:`app.phases`), stopping at
the first failure; a summary at the end (docs/architecture.md#how-a-boot-flows)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app import events
from app.backends.base import InferenceRuntime, PlainRuntime, as_inference_runtime
from app.cache.hashing import EarlyDigests
from app.cache.lock import CacheLock
from app.cache.publish import sweep_temp_files
from app.cache.record import BUILDING, write_record
from app.cache.reuse import Verdict, check_artifact
from app.cancel import call_cancellable, checkpoint, map_cancellable
from app.config import BackboneSpec, EngineCompileRequest
from app.errors import CacheWriteError, ModelDataError
from app.host.identity import HardwareIdentity
from app.phases import Plan, Step, build, make_plan, reuse
from app.values import CompileOutcome, EngineCompileResult

if TYPE_CHECKING:
    from app.fleet.promote import EarlyCopies, Promotion
    from app.governor.eta import Timeline


_LOG = logging.getLogger("engine_init")
_MAX_VERIFY_THREADS = 16
_DAMAGE = (logging.WARNING, events.SIDECAR_MISMATCH)
_STALE = (logging.WARNING, events.PROVENANCE_MISMATCH)
_MISS = {"sidecar": _DAMAGE, "size": _DAMAGE, "not-a-file": _DAMAGE, "record-corrupt": _STALE,
         "interrupted": _STALE, "provenance": (logging.INFO, events.PROVENANCE_MISMATCH),
         "signature": (logging.ERROR, events.SIGNATURE_INVALID),
         "untracked": (logging.WARNING, events.PROVENANCE_UNTRACKED)}


class EngineCompiler:
    """Makes a corpus of engines ready."""

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
        self.identity = identity  # None (no probed host): no hardware identity recorded
        self.trust_untracked = trust_untracked
        self.last_phase_timings: dict[str, float] = {}

    def compile_engines_for_corpus(
        self, request: EngineCompileRequest, *, held_lock: CacheLock | None = None,
        early: EarlyDigests | None = None,
    ) -> tuple[EngineCompileResult, ...]:
        """Reuse or build every backbone. ``held_lock``: the cache lock the caller holds (else
        taken for the call); ``early``: digests hashed before (:mod:`app.cache.hashing`)."""
        started = time.perf_counter()
        timings = dict.fromkeys(("lock_wait", "verify", "compile", "record"), 0.0)
        self.last_phase_timings = timings
        # Filled model by model: a failure's summary counts what was done before it.
        results: list[EngineCompileResult] = []
        completed = False
        try:
            if request.backbones:
                self._run(request, timings, held_lock, early, results)
            completed = True
        finally:
            timings["total"] = time.perf_counter() - started
            self._summary(request, results, timings, completed)
        return tuple(results)

    def check_corpus(self, request: EngineCompileRequest) -> list[tuple[BackboneSpec, Path, Verdict]]:
        """Read-only (no lock, no writes): what a run would decide for each backbone."""
        _, plans = self._plans(request)
        verdicts = self._check_all(request, plans)
        return [(p.spec, p.artifact, v) for p, v in zip(plans, verdicts, strict=True)]

    def preview_promotions(self, request: EngineCompileRequest,
                           rows: list[tuple[BackboneSpec, Path, Verdict]], *,
                           read_bytes: bool) -> dict[str, Promotion]:
        """Read-only: per model of ``rows`` a run would not reuse, what promotion would decide
        before the backend loads the candidate; ``read_bytes``: hash the candidates too."""
        sku, candidates = self._fleet_sku(request), request.fleet_candidates
        if sku is None or candidates is None:
            return {}
        from app.fleet.promote import preview

        out: dict[str, Promotion] = {}
        for plan, (_, _, verdict) in zip(self._plans(request)[1], rows, strict=True):
            if verdict.reuse or verdict.reason == "folder":
                continue
            got = preview(candidates, sku, plan.artifact, plan.expected, verdict.onnx.sha256,
                          request.fleet_public_key, read_bytes=read_bytes,
                          trusted_root=request.fleet_trusted_root,
                          repository=request.fleet_repository)
            if got is not None:
                out[plan.spec.model_name] = got
        return out

    def _plans(self, request: EngineCompileRequest) -> tuple[InferenceRuntime, list[Plan]]:
        runtime = as_inference_runtime(self.runtime, request.host)
        return runtime, [make_plan(runtime, spec, request, self.identity) for spec in request.backbones]

    def _run(
        self, request: EngineCompileRequest, timings: dict[str, float], held: CacheLock | None,
        early: EarlyDigests | None, results: list[EngineCompileResult],
    ) -> None:
        runtime, plans = self._plans(request)
        if held is not None and not held.held:
            raise ValueError("held_lock: the caller passed a cache lock it does not hold")
        lock = contextlib.nullcontext(held) if held is not None else CacheLock(
            request.cache_root, request.lock_timeout_s, self.logger)
        with lock as taken:
            timings["lock_wait"] = 0.0 if held is not None else taken.waited_s
            step = Step(runtime, request, self.logger, self.signing_key, timings)
            try:
                self._under_lock(step, plans, early, results)
            finally:
                # Whatever stopped us, leave no temp file behind (we hold the lock: they are ours).
                for path in sweep_temp_files(request.cache_root):
                    events.emit(self.logger, logging.DEBUG, events.TEMP_CLEANED,
                                f"removed temp file {path.name}", path=str(path))

    def _under_lock(self, step: Step, plans: list[Plan], early: EarlyDigests | None,
                    results: list[EngineCompileResult]) -> None:
        t = time.perf_counter()
        verdicts = self._check_all(step.request, plans, early)
        step.timings["verify"] = time.perf_counter() - t
        for verdict in verdicts:  # before any work: nothing of ours may replace a folder
            if verdict.reason == "folder":
                raise CacheWriteError(f"{verdict.detail} where engine-init keeps an artifact or "
                                      "its companions; it may hold someone's data, so it is "
                                      "left alone", hint="move it out of the cache folder")
        misses = [p for p, v in zip(plans, verdicts, strict=True) if not v.reuse]
        request, sku = step.request, self._fleet_sku(step.request) if misses else None
        timeline: Timeline | None = None
        if misses:  # their build history, read before any pending record replaces a record
            from app.governor.eta import Timeline

            timeline = Timeline([(p.spec.model_name, p.artifact, p.expected) for p in misses],
                                self.logger if request.governor is not None else None,
                                self.signing_key)
        copies = None
        if sku is not None and request.fleet_candidates is not None:
            from app.fleet.promote import EarlyCopies

            # The misses' candidates, copied into the cache one after the other while the run
            # promotes the ones before.
            copies = EarlyCopies(request.fleet_candidates, sku, request.fleet_public_key,
                                 [p.artifact for p in misses])
        try:
            for plan, verdict in zip(plans, verdicts, strict=True):
                checkpoint()
                if verdict.reuse:
                    results.append(reuse(step, plan, verdict))
                    continue
                self._report_miss(plan, verdict, fleet=sku is not None)
                promoted = self._promote(step, plan, verdict, sku, copies) if sku else None
                assert timeline is not None  # made for every run with a miss
                results.append(promoted or build(step, plan, verdict, timeline))
        finally:
            if copies is not None:
                copies.abandon()

    def _fleet_sku(self, request: EngineCompileRequest) -> str | None:
        """This host's SKU key when the candidates hold a folder for it; None: misses are built."""
        candidates = request.fleet_candidates
        if self.identity is None or candidates is None:
            return None
        sku = self.identity.sku_key()
        # The usual case is no folder: the fleet code is not even loaded.
        return sku if os.path.isdir(candidates / sku) else None

    def _check_all(self, request: EngineCompileRequest, plans: list[Plan],
                   early: EarlyDigests | None = None) -> list[Verdict]:
        def one(plan: Plan) -> Verdict:
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

    def _report_miss(self, plan: Plan, verdict: Verdict, fleet: bool) -> None:
        name = plan.spec.model_name
        then = "a fleet candidate is checked" if fleet else "building"
        again = then if fleet else "rebuilding"
        if verdict.reason in _MISS:
            # The detail first: e.g. which SKU facts differ, and how.
            what = verdict.detail or ", ".join(verdict.changed) or verdict.reason
            events.emit(self.logger, *_MISS[verdict.reason],
                        f"{name}: cached {plan.artifact.name} rejected ({what}); {again}",
                        model_name=name, engine_path=str(plan.artifact), reason=verdict.reason,
                        changed=verdict.changed, detail=verdict.detail)
        events.emit(self.logger, logging.INFO, events.CACHE_MISS,
                    f"{name}: no reusable engine ({verdict.reason}); {then}",
                    model_name=name, engine_path=str(plan.artifact), reason=verdict.reason)

    def _promote(self, step: Step, plan: Plan, verdict: Verdict, sku: str,
                 copies: EarlyCopies | None) -> EngineCompileResult | None:
        """This SKU's candidate published; None: build (seeded with the bundle's timing cache)."""
        request = step.request
        candidates = request.fleet_candidates
        assert candidates is not None  # _fleet_sku found this SKU's folder there
        from app.fleet.promote import promote, seed_timing_cache

        name, runtime = plan.spec.model_name, step.runtime
        pending = dataclasses.replace(plan.expected, status=BUILDING)
        # In a worker thread, as a build: copying, loading and gating a candidate take seconds,
        # and a signal must end the run meanwhile.
        got = call_cancellable(lambda: promote(
            runtime, candidates, sku, plan.artifact, plan.expected, verdict.onnx.sha256,
            plan.spec, plan.build_config,
            lambda: write_record(plan.artifact, pending, self.signing_key),
            public_key=request.fleet_public_key, logger=self.logger,
            staged=copies.take(plan.artifact) if copies is not None else None,
            trusted_root=request.fleet_trusted_root, repository=request.fleet_repository))
        if got is not None and got.digest is None:
            events.emit(self.logger, logging.WARNING, events.CANDIDATE_REJECTED,
                        f"{name}: candidate {got.candidate.name} rejected ({got.reason}); "
                        "building here", model_name=name, candidate=str(got.candidate),
                        reason=got.reason)
        if got is None or got.digest is None:  # a build follows: give it the bundle's timings
            seed_timing_cache(runtime, request.cache_root, candidates, sku,
                              request.fleet_public_key, self.logger,
                              trusted_root=request.fleet_trusted_root,
                              repository=request.fleet_repository)
            return None
        verdict.digest, verdict.size = got.digest, got.size
        step.write_record(plan, verdict, None, None, got.accuracy, origin="promoted")
        events.emit(self.logger, logging.INFO, events.CANDIDATE_PROMOTED,
                    f"{name}: promoted candidate {got.candidate.name} for {sku}", model_name=name,
                    engine_path=str(plan.artifact), sha256=got.digest, sku=sku)
        return EngineCompileResult(step.entry(plan, got.digest), CompileOutcome.PROMOTED, None,
                                   got.accuracy)

    def _summary(self, request: EngineCompileRequest, results: list[EngineCompileResult],
                 timings: dict[str, float], completed: bool) -> None:
        built = sum(r.outcome is CompileOutcome.BUILT for r in results)
        promoted = sum(r.outcome is CompileOutcome.PROMOTED for r in results)
        reused = len(results) - built - promoted
        also = f", {promoted} promoted" if promoted else ""
        # The first model not done is where the run stopped (models go in order).
        stopped = (request.backbones[len(results)].model_name
                   if not completed and len(results) < len(request.backbones) else None)
        events.emit(self.logger, logging.INFO, events.COMPILE_SUMMARY,
                    f"{built} built, {reused} reused{also} of {len(request.backbones)}"
                    + (f"; stopped at {stopped}" if stopped else ""),
                    engines_built=built, engines_reused=reused, engines_promoted=promoted,
                    total=len(request.backbones), stopped_at=stopped,
                    phase_timings_s={k: round(v, 4) for k, v in timings.items()})
