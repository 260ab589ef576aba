"""The checks the compiler runs on a built engine, each asking the engine's backend (the
:class:`~app.backends.base.InferenceRuntime` protocol) and never naming one.

:func:`enforce_precision` asks what the compute nodes of an fp16 or int8 build run in
(``precision_in_effect``) and refuses a precision that did not take effect. For models whose
``verify`` is ``accuracy``: :func:`recorded_pass` answers a warm boot from the provenance
record alone (no numpy, onnx or ONNX Runtime); :func:`run_gate` measures the engine, through
the runner its backend opens, against its ONNX model on ONNX Runtime's CPU provider and raises
:class:`~app.errors.AccuracyError` (exit 70) when it fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import InferenceRuntime
from app.config_sections import AccuracyConfig
from app.errors import EngineBuildError
from app.request import BackboneSpec
from app.values import BuildConfig, PrecisionMode
from app.verify.report import AccuracyReport, InputsUsed, default_tolerance

__all__ = ["enforce_precision", "recorded_pass", "run_gate"]


def _settings(spec: BackboneSpec) -> AccuracyConfig:
    return spec.accuracy or AccuracyConfig()


def recorded_pass(stored: dict[str, Any] | None, spec: BackboneSpec, config: BuildConfig, *,
                  engine_sha256: str, onnx_sha256: str) -> dict[str, Any] | None:
    """``stored`` when it is a pass that still vouches for this engine, ONNX model, tolerance
    and inputs; None when the check must run again."""
    report = AccuracyReport.from_json(stored)
    if report is None:
        return None
    settings = _settings(spec)
    low, high = settings.value_range
    inputs = (InputsUsed("random", settings.random_samples, seed=settings.seed, low=low,
                         high=high) if settings.samples_path is None else None)
    if inputs is None and report.inputs.folder != str(settings.samples_path):
        return None  # another folder of samples: check again (same folder: its recorded digest)
    covered = report.covers(engine_sha256=engine_sha256, onnx_sha256=onnx_sha256,
                            tolerance=default_tolerance(config.precision).override(
                                settings.metric, settings.threshold), inputs=inputs,
                            outputs_config=settings.outputs_key())
    return stored if covered else None


def run_gate(runtime: InferenceRuntime, artifact: Path, spec: BackboneSpec,
             config: BuildConfig, logger: logging.Logger, *, engine_sha256: str,
             onnx_sha256: str) -> dict[str, Any]:
    """Check ``artifact`` (built by ``runtime``, run on the device ``config`` names); its
    passing report as JSON, else AccuracyError after a ``c10.engine.accuracy.failed`` event."""
    from app.verify.accuracy import check_accuracy, enforce

    runner = runtime.open_runner(artifact, config)
    try:
        report = check_accuracy(spec.onnx_path, runner, model_name=spec.model_name,
                                precision=config.precision, input_shapes=config.input_shapes,
                                settings=_settings(spec), calibration_dir=config.calibration_dir,
                                engine_sha256=engine_sha256, onnx_sha256=onnx_sha256)
    finally:
        runner.close()
    return enforce(report, logger).to_json()


def enforce_precision(runtime: InferenceRuntime, model_path: Path, artifact: Path,
                      config: BuildConfig, logger: logging.Logger) -> dict[str, Any] | None:
    """After a build asked fp16 or int8 (not with ``verify: none``): what its compute nodes run
    in, for the record; EngineBuildError (exit 70) when none runs in the asked precision. None:
    nothing to say (fp32, or a runtime that cannot tell). INT8 asked and TensorRT's Myelin
    keeping transformer GEMMs in fp16 took effect partially (a warning), not an ignored flag."""
    if config.precision is PrecisionMode.FP32 or config.verify == "none":
        return None
    effect = runtime.precision_in_effect(model_path, artifact, config)
    if effect is None:
        return None
    name, asked = config.model_name, effect.asked
    fields = {"model_name": name, **effect.as_dict()}
    if effect.compute_nodes == 0:
        what = (f"{effect.opaque} Myelin region(s) that this TensorRT cannot inspect"
                if effect.opaque else "no compute node")
        events.emit(logger, logging.WARNING, events.PRECISION_PARTIAL,
                    f"{name}: {what} to check {asked} on", **fields)
    elif not effect.took_effect:
        message = f"{name}: {asked} was asked, but {effect.describe()} ({effect.what_ran()})"
        events.emit(logger, logging.ERROR, events.PRECISION_IGNORED, message, **fields)
        raise EngineBuildError(message, hint=f"set {name}'s precision to one that {runtime.name} "
                               f"runs it in ({', '.join(effect.ran)})")
    elif effect.in_precision < effect.compute_nodes or effect.opaque:
        qdq = ("; INT8 GEMMs in a transformer need an export with Q/DQ nodes (explicit "
               "quantization)" if effect.myelin_fp16 and asked == "int8" else "")
        events.emit(logger, logging.WARNING, events.PRECISION_PARTIAL,
                    f"{name}: {effect.describe()} ({effect.what_ran() or 'nothing counted'}){qdq}",
                    **fields)
    else:
        events.emit(logger, logging.INFO, events.PRECISION_CHECKED, f"{name}: {effect.describe()}",
                    **fields)
    return effect.as_dict()
