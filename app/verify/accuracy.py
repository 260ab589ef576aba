"""The accuracy gate: run the engine and the ONNX model on the same inputs, compare every output.

:func:`check_accuracy` measures and returns an :class:`~app.verify.report.AccuracyReport`;
:func:`enforce` turns it into one event (``c10.engine.accuracy.passed`` or ``.failed``) and,
on failure, an :class:`~app.errors.AccuracyError` (exit 70) naming the model, the output, the
metric, the measured value and the bound. numpy, onnx and ONNX Runtime load only in here, and
only when a check runs. The engine comes as a runner its backend opened; the reference is the
ONNX model on ONNX Runtime's CPU provider, unoptimized
(:func:`~app.backends.onnxruntime.sessions.open_reference`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app import events
from app.backends.base import EngineRunner
from app.cancel import CANCEL, cancelled_error
from app.config_sections import AccuracyConfig
from app.errors import AccuracyError
from app.values import InputProfile, PrecisionMode
from app.verify.report import AccuracyReport, OutputFigures, default_tolerance
from app.verify.rules import resolve_rules, snippet

__all__ = ["check_accuracy", "enforce"]


def check_accuracy(onnx_path: Path, runner: EngineRunner, *, model_name: str,
                   precision: PrecisionMode | str,
                   input_shapes: dict[str | None, InputProfile] | None = None,
                   settings: AccuracyConfig | None = None,
                   calibration_dir: Path | None = None,
                   engine_sha256: str | None = None,
                   onnx_sha256: str | None = None) -> AccuracyReport:
    """Measure ``runner`` (the built engine, owned by the caller) against ``onnx_path``.

    ``input_shapes`` are the build's profiles (``None`` key: the single-input shorthand);
    ``calibration_dir`` is the folder the INT8 scales were fitted to, refused as samples;
    ``settings``: the gate's (the defaults when None).
    """
    from app.backends.onnx_model import inspect_model, resolve_profiles
    from app.backends.onnxruntime.sessions import open_reference
    from app.verify.compare import first_failure
    from app.verify.graph import find_rules
    from app.verify.inputs import gate_inputs
    from app.verify.measure import Measure

    settings = settings or AccuracyConfig()
    precision = PrecisionMode(precision)
    tolerance = default_tolerance(precision).override(settings.metric, settings.threshold)
    started = time.perf_counter()
    model = inspect_model(onnx_path, model_name)
    profiles = resolve_profiles(model, dict(input_shapes or {}), model_name)
    names = tuple(t.name for t in model.outputs)
    configured = {k: v for k, v in settings.outputs.items()
                  if k in names or k not in settings.shared_outputs}
    rules = resolve_rules(model_name, names, configured, find_rules(onnx_path))
    bounds = {name: tolerance.override(rule.metric, rule.threshold) for name, rule in rules.items()}
    inputs = gate_inputs(model, profiles, model_name, samples_dir=settings.samples_path,
                         calibration_dir=calibration_dir if precision is PrecisionMode.INT8 else None,
                         count=settings.random_samples, seed=settings.seed,
                         value_range=settings.value_range)
    reference = open_reference(onnx_path, model_name)
    measure = Measure(model_name, names, rules)
    try:
        for feeds in inputs.samples():
            if CANCEL.is_set():
                raise cancelled_error()
            measure.add(reference.run(feeds), runner.run(feeds))
    finally:
        reference.close()
    outputs = measure.figures(bounds)
    return AccuracyReport(model_name, precision.value, tolerance, inputs.used, outputs,
                          first_failure(outputs, tolerance, bounds), engine_sha256, onnx_sha256,
                          time.perf_counter() - started, outputs_config=settings.outputs_key())


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
        summary = ", ".join(_summary(o) for o in report.outputs)
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
    compare = next((o.compare for o in report.outputs if o.name == failure.output), "values")
    if failure.metric == "nonfinite":
        raise AccuracyError(message, hint=hint)
    fix = snippet(name, failure.output, compare, failure.metric, failure.value)
    raise AccuracyError(message, hint=f"{hint}; if the engine is right and {failure.output!r} "
                                      f"is compared wrongly: {fix}")


def _summary(figures: OutputFigures) -> str:
    """One output's figures in the passed event's message."""
    o = figures
    if o.compare == "skip":
        return f"{o.name} skipped ({o.note})"
    if o.compare == "points":
        text = f"{o.name} matched={o.matched:.4f}/{o.matched_engine:.4f} within {o.radius:.3g}"
    elif o.compare == "argmax":
        text = f"{o.name} argmax agreement={o.agreement:.4f}"
    else:
        text = f"{o.name} rel_l2={o.rel_l2:.3g} cosine={o.cosine:.6f}"
    if o.variation is not None:
        text += f" error/variation={o.variation:.3g}"
    if o.neighbours is not None:
        text += f" neighbours={o.neighbours:.3g}"
    return text
