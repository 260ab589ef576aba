"""What a TensorRT release's ONNX parser can import, and the nodes ``keep_fp32`` selects, read
from the ONNX graph in seconds, not after a build's minutes. The facts and their NVIDIA sources:
docs/tensorrt.md#what-a-release-can-import-known-before-the-build."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.backends.tensorrt.api import parse_version
from app.errors import ModelDataError
from app.values import InputProfile

_DEFORM_FROM = (10, 1)
_TOPK_LIMIT = 3840
_CHAIN = ("Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div")


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    message: str
    hint: str
    refuse: bool

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "what": self.message, "hint": self.hint,
                "refuse": self.refuse}


def load_graph(path: Path) -> Any:
    """The ONNX model at ``path`` without its external data; ModelDataError when unreadable."""
    from app.backends.onnx_model import load_onnx

    try:
        return load_onnx(path, external_data=False)
    except Exception as exc:  # OSError, UnsafeFileError, protobuf's DecodeError...
        raise ModelDataError(f"{path} cannot be read as an ONNX model to check its ops: "
                             f"{type(exc).__name__}: {str(exc)[:200]}",
                             hint="point onnx_path at the exported model file") from exc


def _constant_ints(model: Any) -> dict[str, list[int]]:
    """Integer tensors known without running the graph: initializers and Constant outputs."""
    from onnx import numpy_helper

    found = {t.name: numpy_helper.to_array(t).reshape(-1).tolist() for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).reshape(-1).tolist()
    return {k: [int(x) for x in v] for k, v in found.items() if v and all(
        float(x).is_integer() for x in v)}


def _min_shapes(model: Any, profiles: dict[str, InputProfile]) -> dict[str, list[int | None]]:
    import onnx
    from onnx import shape_inference

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        if value.name in profiles:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, profiles[value.name].min, strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = shape_inference.infer_shapes(copy)
    except Exception:  # a graph ONNX cannot infer: the axis limit is then not checked
        return {}
    shapes: dict[str, list[int | None]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def check_model(onnx_path: Path, version: str,
                profiles: dict[str, InputProfile] | None = None) -> list[Finding]:
    """What TensorRT ``version`` ("8.6.2", "10.3.0") would refuse or warn about in the graph."""
    release = (*parse_version(version), 0)[:2]  # metadata may say "10"
    model = load_graph(Path(onnx_path))
    findings: list[Finding] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    ceiling = 20 if release >= (10, 0) else 17  # the last opset onnx-tensorrt documents
    if opset > ceiling:
        findings.append(Finding("", "", f"opset {opset} is above the {ceiling} that TensorRT "
                                f"{release[0]}.{release[1]}'s ONNX parser documents",
                                f"export with opset {ceiling} or lower", refuse=False))
    consts = _constant_ints(model)
    shapes: dict[str, list[int | None]] | None = None
    for index, node in enumerate(model.graph.node):
        name = node.name or f"node {index}"
        if node.op_type == "DeformConv" and node.domain in ("", "ai.onnx"):
            if release < _DEFORM_FROM:
                findings.append(Finding(
                    name, "DeformConv", f"TensorRT {release[0]}.{release[1]}'s ONNX parser has "
                    f"no DeformConv importer (it arrived in 10.1, as the ModulatedDeformConv2d "
                    f"plugin)", "export without DeformConv (e.g. LightGlue-ONNX's portable "
                    "deformable convolution: GridSample and Einsum), or use TensorRT 10.1 or "
                    "later (JetPack 6.1+)", refuse=True))
        elif node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in consts:
            k = consts[node.input[1]][0]
            limit_ok = k < _TOPK_LIMIT if release >= (10, 0) else k <= _TOPK_LIMIT
            if not limit_ok:
                bound = "less than 3840" if release >= (10, 0) else "at most 3840"
                findings.append(Finding(
                    name, "TopK", f"TopK K={k}, but TensorRT {release[0]}.{release[1]} takes a "
                    f"K {bound}", f"export with a top-k of {_TOPK_LIMIT - 1} or fewer", refuse=True))
                continue
            if profiles:
                shapes = _min_shapes(model, profiles) if shapes is None else shapes
                dims = shapes.get(node.input[0]) or []
                axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
                size = dims[axis] if dims and -len(dims) <= axis < len(dims) else None
                if size is not None and k > size:
                    findings.append(Finding(
                        name, "TopK", f"TopK K={k}, but the axis it reduces has only {size} "
                        "elements at the profile's min shape", "raise the min input shape, or "
                        "export with a smaller top-k", refuse=True))
    return findings


def require_supported(onnx_path: Path, version: str, model_name: str, logger: logging.Logger,
                      profiles: dict[str, InputProfile] | None = None) -> list[Finding]:
    """:func:`check_model`, its warnings as events; ModelDataError for the first refusal."""
    findings = check_model(onnx_path, version, profiles)
    for found in findings:
        if not found.refuse:
            events.emit(logger, logging.WARNING, events.TENSORRT_OPSET,
                        f"{model_name}: {found.message}", model_name=model_name, **found.as_dict())
    refused = [f for f in findings if f.refuse]
    if refused:
        first = refused[0]
        where = f" (node {first.node})" if first.node else ""
        raise ModelDataError(f"{model_name}: TensorRT {version} cannot build it: "
                             f"{first.message}{where}", hint=first.hint)
    return findings


def check_corpus(models: Iterable[tuple[str, Path, dict[str | None, InputProfile]]],
                 version: str) -> dict[str, list[Finding]]:
    """:func:`check_model` per (name, ONNX file, configured shapes)."""
    from app.backends.onnx_model import inspect_model, resolve_profiles

    found = {}
    for name, onnx_path, shapes in models:
        model = inspect_model(onnx_path, name)
        found[name] = check_model(onnx_path, version, resolve_profiles(model, shapes, name))
    return found


# keep_fp32's "layernorm" (docs/tensorrt.md#keeping-layers-in-fp32-keep_fp32): an export below
# opset 17 decomposes LayerNorm into this chain, run in FP16 unless constrained.
def decomposed_layernorms(graph: Any) -> list[list[str]]:
    """Node names of each ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div chain."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for mean in (n for n in graph.node if n.op_type == "ReduceMean"):
        chain, current = [mean], mean
        for op in _CHAIN:
            nxt = next((c for c in consumers.get(current.output[0], []) if c.op_type == op), None)
            if nxt is None:
                break
            chain.append(nxt)
            current = nxt
        if len(chain) != len(_CHAIN) + 1:
            continue
        sub, div = chain[1], chain[-1]
        # the Div divides the centred input (the Sub's output) by the standard deviation
        if sub.input[1] == mean.output[0] and producer.get(div.input[0]) is sub:
            found.append([n.name for n in chain])
    return found


def nodes_to_keep(graph: Any, keep: Iterable[str]) -> set[str]:
    """The ONNX nodes ``keep`` selects: ``layernorm`` (the chain), an op type, or a node name."""
    keep = set(keep)
    names = {n.name for n in graph.node if n.name in keep or n.op_type in keep}
    if "layernorm" in keep:
        names.update(name for chain in decomposed_layernorms(graph) for name in chain)
    return names - {""}
