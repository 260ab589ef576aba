"""How each output of a model is compared: the config's ``accuracy.outputs`` over what the
graph shows (:mod:`app.verify.graph`) over ``values``.

A rule is the config's own :class:`~app.config_sections.AccuracyOutputConfig` (its
``comparison``: one of :data:`COMPARISONS`), whether configured or found in the graph. No heavy
import: a warm boot compares the configured ones with a recorded pass.
"""

from __future__ import annotations

from app.config_sections import AccuracyOutputConfig
from app.errors import ModelDataError

#: ``aligned`` is ``values`` on rows reordered by another output's ``points`` matching.
COMPARISONS = ("values", "points", "aligned", "argmax", "skip")
_VALUES = AccuracyOutputConfig()


def resolve_rules(model_name: str, outputs: tuple[str, ...],
                  configured: dict[str, AccuracyOutputConfig],
                  found: dict[str, AccuracyOutputConfig]) -> dict[str, AccuracyOutputConfig]:
    """Every output's rule: configured, else found in the graph, else ``values``;
    ModelDataError (exit 65) when the config names an output the model lacks, or aligns an
    output to one that is not compared as points."""
    unknown = sorted(set(configured) - set(outputs))
    if unknown:
        raise ModelDataError(f"{model_name}: accuracy.outputs names {unknown}, which the model "
                             f"does not output (its outputs: {list(outputs)})",
                             hint="use the names of the ONNX model's outputs")
    rules: dict[str, AccuracyOutputConfig] = {}
    for name in outputs:
        rule = configured.get(name) or found.get(name) or _VALUES
        if name in configured and not rule.reason:
            rule = rule.model_copy(update={"reason": "configured"})
        rules[name] = rule
    for name, rule in rules.items():
        if rule.comparison != "aligned":
            continue
        anchor = rules.get(rule.aligned_to or "")
        if anchor is None or anchor.comparison != "points":
            raise ModelDataError(
                f"{model_name}: output {name!r} is aligned_to {rule.aligned_to!r}, which is not "
                "an output compared as points",
                hint=f"set accuracy.outputs.{rule.aligned_to}.compare: points, or align "
                     f"{name!r} to an output compared as points")
    return rules


def snippet(model_name: str, output: str, compare: str, metric: str, value: float) -> str:
    """The config that compares ``output`` as what it means, or relaxes only its bound: the
    failure hint's suggestion (the model-wide tolerance stays)."""
    from app.verify.report import METRICS, SET_FIGURES

    key = SET_FIGURES.get(metric, metric)
    if METRICS.get(key) == "min":
        bound = f"{max(0.0, value * 0.99):.3g}"
    else:
        bound = f"{value * 1.1:.3g}" if value > 0 else "0"
    own = f"{{metric: {key}, threshold: {bound}}}"
    where = f"in {model_name}'s backbones entry, set accuracy: {{outputs: {{{output}: "
    if compare == "values" and key in ("rel_l2", "cosine", "max_abs"):
        return (f"{where}{{compare: points}}}}}} if its rows are a set (keypoints, boxes, "
                f"matches), {{compare: argmax}} if only its argmax matters, or {own} to accept "
                "this output's difference alone")
    return f"{where}{own}}}}} to accept this output's difference alone"
