"""The accuracy gate and the precision check (docs/accuracy-gate.md), asking the engine's
backend through the InferenceRuntime protocol, never naming one. numpy, onnx and ONNX Runtime
load only when a check runs: :func:`recorded_pass` answers a warm boot from the record alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import EngineRunner, InferenceRuntime
from app.cancel import CANCEL, cancelled_error
from app.config import BackboneSpec
from app.config_sections import AccuracyConfig
from app.errors import AccuracyError, EngineBuildError
from app.values import BuildConfig, InputProfile, PrecisionMode
from app.verify.report import (
    METRICS,
    SET_FIGURES,
    AccuracyReport,
    Failure,
    InputsUsed,
    OutputFigures,
    Tolerance,
    default_tolerance,
)
from app.verify.rules import find_rules, resolve_rules, snippet


def check_accuracy(onnx_path: Path, runner: EngineRunner, *, model_name: str,
                   precision: PrecisionMode | str,
                   input_shapes: dict[str | None, InputProfile] | None = None,
                   settings: AccuracyConfig | None = None,
                   calibration_dir: Path | None = None,
                   engine_sha256: str | None = None,
                   onnx_sha256: str | None = None) -> AccuracyReport:
    """Measure ``runner`` (owned by the caller) against ``onnx_path``; ``calibration_dir``: the
    folder the INT8 scales were fitted to, refused as samples."""
    from app.backends.onnx_model import inspect_model, resolve_profiles
    from app.backends.onnxruntime.sessions import open_reference
    from app.verify.inputs import gate_inputs
    from app.verify.measure import Measure

    settings = settings or AccuracyConfig()
    precision = PrecisionMode(precision)
    tolerance = _tolerance(settings, precision)
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
    figures = next(o for o in report.outputs if o.name == failure.output)
    value = (_nonfinite_value(figures) if failure.metric == "nonfinite" else
             f"{failure.metric} {failure.value:.4g} {failure.relation} {failure.threshold:g}")
    message = (f"{name}: the {report.precision} engine fails the accuracy check on output "
               f"{failure.output!r}: {value} ({where})")
    events.emit(logger, logging.ERROR, events.ACCURACY_FAILED, message, output=failure.output,
                metric=failure.metric, value=failure.value, threshold=failure.threshold, **fields)
    hint = ("calibrate on data like the robot's, or build this model in fp16/fp32"
            if report.precision == "int8" else
            "build this model in a wider precision (fp32)" if report.precision == "fp16" else
            "check the backend's precision flags")
    compare = figures.compare
    if failure.metric == "nonfinite":
        export = _nonfinite_hint(name, figures)
        engine_side = figures.nonfinite > figures.nonfinite_model
        if export and engine_side and report.precision != "fp32":  # its range may be why too
            export = f"{export}; or {hint}"
        raise AccuracyError(message, hint=export or hint)
    fix = snippet(name, failure.output, compare, failure.metric, failure.value)
    raise AccuracyError(message, hint=f"{hint}; if the engine is right and {failure.output!r} "
                                      f"is compared wrongly: {fix}")


def _nonfinite_value(o: OutputFigures) -> str:
    engine = o.nonfinite - o.nonfinite_model
    if not o.nonfinite_model:
        return f"{engine} non-finite values where the ONNX model's are finite"
    theirs = f"{o.nonfinite_model} non-finite values in the ONNX model's output where the engine's differ"
    return f"{engine} non-finite values in the engine's output where the ONNX model's are finite, " \
           f"{theirs}" if engine else theirs


def _nonfinite_hint(name: str, o: OutputFigures) -> str:
    """The hint of a non-finite failure that the precision does not explain (-inf against
    finite values only, or the model's own NaN or inf); empty: the precision hint."""
    if o.minus_inf != o.nonfinite and not o.nonfinite_model:
        return ""
    if o.minus_inf == o.nonfinite:
        what = ("they are -inf against finite values: log-probabilities that underflow on one "
                "side only (e.g. a logsigmoid exported as Log(Sigmoid)); export it without the Log of an "
                "underflowing value (logsigmoid as -Softplus(-x), log_softmax as LogSoftmax)")
    else:
        what = ("the ONNX model itself gives NaN or inf there: fix the model's export for "
                "these inputs (e.g. logsigmoid as -Softplus(-x), not Log(Sigmoid))")
    if o.compare == "argmax":
        return what
    return (f"{what}, or, if only the argmax of {o.name!r} matters (an assignment), in {name}'s "
            f"backbones entry set accuracy: {{outputs: {{{o.name}: {{compare: argmax}}}}}}")


def first_failure(outputs: tuple[OutputFigures, ...], tolerance: Tolerance,
                  per_output: dict[str, Tolerance] | None = None) -> Failure | None:
    """The first bound broken, outputs in model order, non-finite values first; ``rel_l2`` and
    ``cosine`` not for an output within ``atol`` everywhere, nor for points, argmax or skip."""
    for fig in outputs:
        bounds = (per_output or {}).get(fig.name, tolerance)
        if fig.compare == "skip":
            continue
        if fig.nonfinite:
            return Failure(fig.name, "nonfinite", float(fig.nonfinite), 0.0)
        values = fig.compare in ("values", "aligned")
        relative = ("rel_l2", "cosine") if values and fig.max_abs > bounds.atol else ()
        judged = [(m, m) for m in (*relative, *(("max_abs",) if values else ()))]
        for figure, key in [*judged, *SET_FIGURES.items()]:
            measured, limit = getattr(fig, figure), getattr(bounds, key)
            if measured is None or limit is None:
                continue
            broken = not measured <= limit if METRICS[key] == "max" else not measured >= limit
            if broken:
                return Failure(fig.name, figure, float(measured), float(limit))
    return None


def _summary(figures: OutputFigures) -> str:
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


def _settings(spec: BackboneSpec) -> AccuracyConfig:
    return spec.accuracy or AccuracyConfig()


def _tolerance(settings: AccuracyConfig, precision: PrecisionMode) -> Tolerance:
    return default_tolerance(precision).override(settings.metric, settings.threshold)


def recorded_pass(stored: dict[str, Any] | None, spec: BackboneSpec, config: BuildConfig, *,
                  engine_sha256: str, onnx_sha256: str) -> dict[str, Any] | None:
    """``stored`` when it is a pass that still covers this engine (docs/accuracy-gate.md#when-it-runs)."""
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
                            tolerance=_tolerance(settings, config.precision), inputs=inputs,
                            outputs_config=settings.outputs_key())
    return stored if covered else None


def run_gate(runtime: InferenceRuntime, artifact: Path, spec: BackboneSpec,
             config: BuildConfig, logger: logging.Logger, *, engine_sha256: str,
             onnx_sha256: str) -> dict[str, Any]:
    """Check ``artifact``: its passing report as JSON, else AccuracyError after the event."""
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
    """After an fp16 or int8 build: what its compute nodes run in, for the record (None: fp32,
    or a runtime that cannot tell); EngineBuildError when none runs in the asked precision."""
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
