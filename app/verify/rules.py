"""How each output of a model is compared: the config's ``accuracy.outputs``, over what the ONNX
graph shows (:func:`find_rules`: docs/accuracy-gate.md#read-from-the-graph), over ``values``. A
rule is the config's own AccuracyOutputConfig. onnx is imported only in :func:`find_rules`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config_sections import AccuracyOutputConfig
from app.errors import ModelDataError
from app.verify.report import METRICS, SET_FIGURES

_VALUES = AccuracyOutputConfig()
_SOURCES = ("TopK", "NonMaxSuppression", "NonZero", "ArgMax")
_NEW_ROWS = ("NonMaxSuppression", "NonZero")
#: Ops whose inputs after the first are shapes, axes, counts or sizes, never rows.
_FIRST_INPUT_ONLY = {"Reshape", "Expand", "Tile", "Slice", "Pad", "Resize", "Squeeze",
                     "Unsqueeze", "ReduceL2", "ReduceL1", "ReduceSum", "ReduceMean", "ReduceMax",
                     "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceLogSumExp", "Split"}
#: Ops that give sizes or fresh values, whatever they are fed: the order stops there.
_STOP = {"Shape", "Size", "ConstantOfShape", "Range", "EyeLike", "RandomNormalLike",
         "RandomUniformLike"}
#: Integer element types (onnx.TensorProto values): INT8..UINT64, and BOOL.
_INTEGER = {2, 3, 4, 5, 6, 7, 9, 12, 13}


def resolve_rules(model_name: str, outputs: tuple[str, ...],
                  configured: dict[str, AccuracyOutputConfig],
                  found: dict[str, AccuracyOutputConfig]) -> dict[str, AccuracyOutputConfig]:
    """Every output's rule: configured, else found, else ``values``; ModelDataError for an
    output the model lacks, or one aligned to an output not compared as points."""
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
    """The failure hint's config: compare ``output`` as what it means, or relax its bound only."""
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


def find_rules(onnx_path: Path) -> dict[str, AccuracyOutputConfig]:
    """{output: rule} for the outputs the graph shows to be sets or assignments; never raises."""
    from app.backends.onnx_model import load_onnx

    try:
        model = load_onnx(onnx_path, external_data=False)
    except Exception:  # the reference run reports an unreadable model with its own message
        return {}
    graph = model.graph
    source: dict[str, str] = {}  # tensor -> the source node that orders its rows
    for index, node in enumerate(graph.node):
        label = node.name or f"{node.op_type}#{index}"
        if node.op_type in _STOP:
            continue
        data = node.input[:1] if node.op_type in _FIRST_INPUT_ONLY else node.input
        origin = next((source[t] for t in data if t in source), None)
        if node.op_type in _NEW_ROWS or (node.op_type in _SOURCES and origin is None):
            # The first source orders the rows; NonZero and NonMaxSuppression always make rows
            # of their own (a matcher's NonZero over its mutual ArgMax: a set of matches).
            origin = f"{node.op_type}:{label}"
        if origin is None:
            continue
        for tensor in node.output:
            if tensor:
                source[tensor] = origin
    return _rules(graph, source)


def _rules(graph: Any, source: dict[str, str]) -> dict[str, AccuracyOutputConfig]:
    groups: dict[str, list[Any]] = {}
    for output in graph.output:
        if output.name in source:
            groups.setdefault(source[output.name], []).append(output)
    rules: dict[str, AccuracyOutputConfig] = {}
    for origin, outputs in groups.items():
        kind, _, node = origin.partition(":")
        if kind == "ArgMax":  # an index per position: equal or not (its values stay values)
            for output in outputs:
                if _elem_type(output) in _INTEGER:
                    rules[output.name] = AccuracyOutputConfig(
                        compare="argmax", reason=f"indices of ArgMax {node}: compared for equality")
            continue
        anchor = _anchor(outputs)
        for output in outputs:
            integer = _elem_type(output) in _INTEGER
            if output is anchor:
                radius = 0.0 if integer else None
                rules[output.name] = AccuracyOutputConfig(
                    compare="points", radius=radius,
                    reason=f"rows ordered by {kind} {node}: compared as a set")
            elif anchor is not None:
                rules[output.name] = AccuracyOutputConfig(
                    aligned_to=anchor.name,
                    reason=f"rows ordered by {kind} {node}: follow {anchor.name!r}")
    return rules


def _anchor(outputs: list[Any]) -> Any:
    """The output whose rows are positions: coordinates first, then rows of indices, or None."""
    coordinates = [o for o in outputs if _elem_type(o) not in _INTEGER and _is_rows(o)]
    indices = [o for o in outputs if _elem_type(o) in _INTEGER and _is_rows(o)]
    return (coordinates or indices or [None])[0]


def _is_rows(output: Any) -> bool:
    dims = _dims(output)
    return len(dims) >= 2 and isinstance(dims[-1], int) and 1 <= dims[-1] <= 4


def _elem_type(output: Any) -> int:
    return int(output.type.tensor_type.elem_type)


def _dims(output: Any) -> list[int | str]:
    shape = output.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in shape.dim]
