"""The accuracy gate as the compiler runs it, for models whose ``verify`` is ``accuracy``.

:func:`recorded_pass` answers a warm boot from the provenance record alone (no numpy, onnx or
ONNX Runtime); :func:`run_gate` measures the built engine against its ONNX model on ONNX
Runtime's CPU provider and raises :class:`~app.errors.AccuracyError` (exit 70) when it fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.config_sections import AccuracyConfig
from app.request import BackboneSpec
from app.values import BuildConfig
from app.verify.report import AccuracyReport, InputsUsed, default_tolerance

__all__ = ["recorded_pass", "run_gate"]


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


def run_gate(backend: str, artifact: Path, spec: BackboneSpec, config: BuildConfig,
             logger: logging.Logger, *, engine_sha256: str,
             onnx_sha256: str) -> dict[str, Any]:
    """Check ``artifact`` (built by ``backend``); its passing report as JSON, else
    AccuracyError after a ``c10.engine.accuracy.failed`` event."""
    from app.verify.accuracy import check_accuracy, enforce
    from app.verify.runners import open_runner

    runner = open_runner(backend, artifact, spec.model_name, cuda_device=config.cuda_device,
                         dla_core=config.dla_core)
    try:
        report = check_accuracy(spec.onnx_path, runner, model_name=spec.model_name,
                                precision=config.precision, input_shapes=config.input_shapes,
                                settings=_settings(spec), calibration_dir=config.calibration_dir,
                                engine_sha256=engine_sha256, onnx_sha256=onnx_sha256)
    finally:
        runner.close()
    return enforce(report, logger).to_json()
