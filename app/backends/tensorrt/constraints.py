"""Layers kept in float32 under fp16/int8: TensorRT's precision constraints, from ``keep_fp32``.

TensorRT warns "Running layernorm after self-attention in FP16 may cause overflow ... forcing
layernorm layers to run in FP32 precision can help with preserving accuracy"
(NVIDIA/TensorRT#2781, #4111 on 10.3). An export at opset 17 or later has a
``LayerNormalization`` node, which TensorRT 10 imports as an ``INormalizationLayer`` computing
in FP32 by default (TensorRT v10.3.0 include/NvInfer.h:6217-6238); an export below opset 17
decomposes it into ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, and those run in FP16 unless
constrained. DINOv2 has high-norm tokens whose squares can pass FP16's 65504.

``keep_fp32`` entries: ``layernorm`` (that decomposed chain), an ONNX op type (``Softmax``), or
an ONNX node name. The ONNX parser names the layer it makes for a node after the node (a
second layer of the same node gets ``<name>_<counter>``: onnx-tensorrt 10.1-GA
ImporterContext.cpp:108-147, weightUtils.cpp:152-166), so the layers of those names get
``layer.precision`` and every output type FLOAT, with
``BuilderFlag.PREFER_PRECISION_CONSTRAINTS`` (as trtexec's ``--layerPrecisions`` with
``--precisionConstraints=prefer``): TensorRT keeps them in FP32 where it has an FP32
implementation, and falls back with a warning where it does not, instead of failing the build
as ``OBEY`` would (TensorRT v10.3.0 include/NvInfer.h:646-656).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_CHAIN = ("Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div")


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
    """The names of the ONNX nodes ``keep`` selects."""
    keep = set(keep)
    names = {n.name for n in graph.node if n.name in keep or n.op_type in keep}
    if "layernorm" in keep:
        names.update(name for chain in decomposed_layernorms(graph) for name in chain)
    return names - {""}


def pin_layers(trt: Any, network: Any, config: Any, nodes: set[str]) -> list[str]:
    """Constrain the network's layers made from ``nodes`` to FP32; the names of those layers."""
    if not nodes:
        return []
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        name = str(layer.name)
        if name in nodes:
            layer.precision = trt.DataType.FLOAT
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.DataType.FLOAT)
            pinned.append(name)
    if pinned:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned
