"""How each output of a model is compared: the config's ``accuracy.outputs`` over what the
graph shows (:mod:`app.verify.graph`) over ``values``.

No heavy import: the config builds these, and a warm boot compares them with a recorded pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from app.errors import ModelDataError
from app.verify.report import Tolerance

__all__ = ["COMPARISONS", "OutputRule", "resolve_rules", "snippet"]

#: ``aligned`` is ``values`` on rows reordered by another output's ``points`` matching.
COMPARISONS = ("values", "points", "aligned", "argmax", "skip")


@dataclass(frozen=True)
class OutputRule:
    """One output's comparison. ``radius`` (points: None derives it, see docs), ``aligned_to``
    (aligned: the points output whose matching reorders the rows), ``axis`` (argmax),
    ``reason`` (skip; and where a rule came from), ``metric``/``threshold`` (one bound of the
    tolerance replaced for this output only)."""

    compare: str = "values"
    radius: float | None = None
    aligned_to: str | None = None
    axis: int = -1
    reason: str = ""
    metric: str | None = None
    threshold: float | None = None

    def tolerance(self, base: Tolerance) -> Tolerance:
        if self.metric is None or self.threshold is None:
            return base
        return base.override(self.metric, self.threshold)

    def key(self) -> dict[str, Any]:
        """What a recorded pass must match (the reason is words, not a setting)."""
        return {k: v for k, v in asdict(self).items() if k != "reason"}


def resolve_rules(model_name: str, outputs: tuple[str, ...], configured: dict[str, OutputRule],
                  found: dict[str, OutputRule]) -> dict[str, OutputRule]:
    """Every output's rule: configured, else found in the graph, else ``values``;
    ModelDataError (exit 65) when the config names an output the model lacks, or aligns an
    output to one that is not compared as points."""
    unknown = sorted(set(configured) - set(outputs))
    if unknown:
        raise ModelDataError(f"{model_name}: accuracy.outputs names {unknown}, which the model "
                             f"does not output (its outputs: {list(outputs)})",
                             hint="use the names of the ONNX model's outputs")
    rules: dict[str, OutputRule] = {}
    for name in outputs:
        rule = configured.get(name) or found.get(name) or OutputRule()
        if name in configured and name in found and not configured[name].reason:
            rule = replace(rule, reason="configured")
        rules[name] = rule
    for name, rule in rules.items():
        if rule.compare != "aligned":
            continue
        anchor = rules.get(rule.aligned_to or "")
        if anchor is None or anchor.compare != "points":
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
