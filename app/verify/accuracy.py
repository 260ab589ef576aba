"""The accuracy gate: run the engine and the ONNX model on the same inputs, compare every output.

:func:`check_accuracy` measures and returns an :class:`~app.verify.report.AccuracyReport`;
:func:`enforce` turns it into one event (``c10.engine.accuracy.passed`` or ``.failed``) and,
on failure, an :class:`~app.errors.AccuracyError` (exit 70) naming the model, the output, the
metric, the measured value and the bound. numpy, onnx and ONNX Runtime load only in here, and
only when a check runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.cancel import CANCEL, cancelled_error
from app.errors import AccuracyError
from app.values import InputProfile, PrecisionMode
from app.verify.inputs import DEFAULT_COUNT, DEFAULT_RANGE, DEFAULT_SEED
from app.verify.report import AccuracyReport, Tolerance, default_tolerance
from app.verify.runners import EngineRunner

__all__ = ["AccuracySettings", "check_accuracy", "enforce"]


@dataclass(frozen=True)
class AccuracySettings:
    """One model's gate settings: ``metric``/``threshold`` override one bound of the
    precision's default tolerance; ``samples_path`` is a folder of sample inputs, otherwise
    ``random_samples`` seeded random inputs in ``value_range`` are used."""

    metric: str | None = None
    threshold: float | None = None
    samples_path: Path | None = None
    random_samples: int = DEFAULT_COUNT
    seed: int = DEFAULT_SEED
    value_range: tuple[float, float] = DEFAULT_RANGE

    def tolerance_for(self, precision: PrecisionMode | str) -> Tolerance:
        tolerance = default_tolerance(precision)
        if self.metric is not None and self.threshold is not None:
            tolerance = tolerance.override(self.metric, self.threshold)
        return tolerance


def check_accuracy(onnx_path: Path, runner: EngineRunner, *, model_name: str,
                   precision: PrecisionMode | str,
                   input_shapes: dict[str | None, InputProfile] | None = None,
                   settings: AccuracySettings | None = None,
                   calibration_dir: Path | None = None,
                   engine_sha256: str | None = None,
                   onnx_sha256: str | None = None) -> AccuracyReport:
    """Measure ``runner`` (the built engine, owned by the caller) against ``onnx_path``.

    ``input_shapes`` are the build's profiles (``None`` key: the single-input shorthand);
    ``calibration_dir`` is the folder the INT8 scales were fitted to, refused as samples.
    """
    from app.backends.onnx_model import inspect_model, resolve_profiles
    from app.verify.compare import Worst, figures_of, first_failure
    from app.verify.inputs import gate_inputs
    from app.verify.runners import OnnxReference

    settings = settings or AccuracySettings()
    precision = PrecisionMode(precision)
    tolerance = settings.tolerance_for(precision)
    started = time.perf_counter()
    model = inspect_model(onnx_path, model_name)
    profiles = resolve_profiles(model, dict(input_shapes or {}), model_name)
    inputs = gate_inputs(model, profiles, model_name, samples_dir=settings.samples_path,
                         calibration_dir=calibration_dir if precision is PrecisionMode.INT8 else None,
                         count=settings.random_samples, seed=settings.seed,
                         value_range=settings.value_range)
    reference = OnnxReference(onnx_path, model_name)
    worst = Worst()
    try:
        for feeds in inputs.samples():
            if CANCEL.is_set():
                raise cancelled_error()
            want = reference.run(feeds)
            got = runner.run(feeds)
            for tensor in model.outputs:
                _require_same_shape(model_name, tensor.name, want[tensor.name], got)
                worst.add(figures_of(tensor.name, want[tensor.name], got[tensor.name]))
    finally:
        reference.close()
    outputs = tuple(worst.by_output[t.name] for t in model.outputs)
    return AccuracyReport(model_name, precision.value, tolerance, inputs.used, outputs,
                          first_failure(outputs, tolerance), engine_sha256, onnx_sha256,
                          time.perf_counter() - started)


def _require_same_shape(model_name: str, name: str, want: Any, got: dict[str, Any]) -> None:
    import numpy as np

    if name not in got:
        raise AccuracyError(f"{model_name}: the engine gave no output {name!r} "
                            f"(it gave {sorted(got)})", hint="rebuild the engine from this model")
    if np.shape(want) != np.shape(got[name]):
        raise AccuracyError(
            f"{model_name}: output {name!r} has shape {list(np.shape(got[name]))} from the engine, "
            f"{list(np.shape(want))} from the ONNX model", hint="rebuild the engine from this model")


def enforce(report: AccuracyReport, logger: logging.Logger) -> AccuracyReport:
    """One event for ``report``; AccuracyError (exit 70) when it failed."""
    name, used = report.model_name, report.inputs
    where = (f"{used.count} random sample{'s' if used.count != 1 else ''}" if used.kind == "random"
             else f"{used.count} sample{'s' if used.count != 1 else ''} from {used.folder}")
    fields = {"model_name": name, "precision": report.precision, "inputs": used.kind,
              "samples": used.count, "tolerance": report.tolerance.as_dict(),
              "outputs": report.to_json()["outputs"], "duration_s": round(report.duration_s, 4)}
    failure = report.failure
    if failure is None:
        summary = ", ".join(f"{o.name} rel_l2={o.rel_l2:.3g} cosine={o.cosine:.6f}"
                            for o in report.outputs)
        events.emit(logger, logging.INFO, events.ACCURACY_PASSED,
                    f"{name}: {report.precision} engine matches the ONNX model on {where} "
                    f"({summary})", **fields)
        return report
    value = (f"{int(failure.value)} non-finite values where the ONNX model's are finite"
             if failure.metric == "nonfinite" else
             f"{failure.metric} {failure.value:.4g} {failure.relation} {failure.threshold:g}")
    message = (f"{name}: the {report.precision} engine fails the accuracy check on output "
               f"{failure.output!r}: {value} ({where})")
    events.emit(logger, logging.ERROR, events.ACCURACY_FAILED, message, output=failure.output,
                metric=failure.metric, value=failure.value, threshold=failure.threshold, **fields)
    hint = ("calibrate on data like the robot's, or build this model in fp16/fp32"
            if report.precision == "int8" else
            "build this model in a wider precision (fp32)" if report.precision == "fp16" else
            "check the backend's precision flags")
    raise AccuracyError(message, hint=f"{hint}; if this difference is acceptable, set "
                                      f"accuracy.metric/threshold for {name}")
