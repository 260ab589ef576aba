"""Take an engine that verified: re-run the accuracy gate only when its recorded figures no
longer cover the current tolerance or inputs, and track what was untracked.

A record is rewritten only when it must be: a pre-installed engine gets its first one, an ONNX
model that had to be re-read gets its stat facts remembered (so the next boot need not re-read
it), a new gate result is kept. Otherwise a warm boot writes nothing.
"""

from __future__ import annotations

import logging

from app import events
from app.cache.record import read_record
from app.cache.reuse import Verdict
from app.phases.plan import Plan, Step
from app.values import CompileOutcome, EngineCompileResult
from app.verify.accuracy import recorded_pass, run_gate


def reuse(step: Step, plan: Plan, verdict: Verdict) -> EngineCompileResult:
    """``plan``'s engine, which ``verdict`` found reusable, as this run's result."""
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
