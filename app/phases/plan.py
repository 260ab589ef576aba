"""A model's plan (artifact, build settings, the record it must match) and the run's context.

The plan is all a run decides before it reads the cache: the artifact's name from the backend,
the build settings, and the provenance record the current inputs give (:meth:`ProvenanceRecord
.build`), which the reuse decision compares and every record written for the model starts from.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.backends.base import InferenceRuntime
from app.cache.record import ProvenanceRecord, calibration_fingerprint, write_record
from app.cache.reuse import Verdict
from app.config import BackboneSpec, EngineCompileRequest
from app.host.identity import HardwareIdentity
from app.values import BuildConfig, EngineCacheEntry


@dataclass(frozen=True)
class Plan:
    """One model's artifact: where it lives, how it is built, the record it must match."""

    spec: BackboneSpec
    build_config: BuildConfig
    artifact: Path
    expected: ProvenanceRecord


@dataclass
class Step:
    """What every phase of one run shares."""

    runtime: InferenceRuntime
    request: EngineCompileRequest
    logger: logging.Logger
    signing_key: bytes | None
    #: Seconds per phase (lock_wait, verify, compile, record), summed over the run's models.
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
        """The final record of ``plan``'s engine as ``verdict`` found or made it. ``kept``: the
        stored record of a reused engine, whose build facts (duration, timing cache, history,
        precision in effect) stay; ``noted``: this build's."""
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
    """``spec``'s plan on this host; ``identity`` None records no hardware identity."""
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
        sku=identity.sku_facts() if identity else {},
        hardware=identity.as_dict() if identity else {})
    return Plan(spec, config, request.cache_root / name, expected)
