"""What a TensorRT engine's compute layers run in, from its engine inspector.

The engine inspector's JSON (the engine built with detailed profiling verbosity, as fp16 and
int8 builds are) gives each layer's type and its inputs' formats; each compute layer is counted
in the type of its first input. What a release can report differs for transformers, which
TensorRT hands to its Myelin compiler: 8.x shows each such region as one opaque
``"LayerType": "Myelin"`` ForeignNode (NVIDIA/TensorRT#2576), counted apart as not inspectable;
10.x shows its kernels as ``gemm`` and ``kgen`` layers with bare formats ("Half", "Int8"; TREx
``trex/colors.py:66,78-79``). Under the INT8 flag Myelin picks the fastest kernels and often
keeps GEMMs in FP16 ("it won't ensure every layer run in int8", #3784): INT8 asked and Myelin
GEMMs in fp16 is reduced precision that took effect partially (a warning), not an ignored flag.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from app.backends.base import PrecisionInEffect
from app.cache.fsread import parse_json

#: TensorRT's layer types: CaskConvolution, CaskGemmMatrixMultiply, gemm, MatrixMultiply...
_COMPUTE = ("conv", "gemm", "matrixmultiply", "fullyconnected", "rnn", "attention")
#: Words of TensorRT's "Format/Datatype" ("Int8", "Half", "Float" without an execution
#: context; "Row major linear FP32", "Channel major FP16 format where channel % 8 == 0"...).
#: "UInt8" before "Int8" and "BFloat16" before "Float" (TREx activations.py's format table).
_TYPES = (("uint8", "uint8"), ("int8", "int8"), ("fp8", "fp8"), ("bfloat16", "bf16"),
          ("bf16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
          ("float", "fp32"))
#: A Myelin region as TensorRT 8.x reports it (one opaque layer), and the GEMM kernels of one
#: as 10.x reports them.
_MYELIN, _MYELIN_GEMM = "myelin", "gemm"


def engine_information(trt: Any, engine: Any) -> str:
    """The deserialized ``engine``'s layers as the inspector's JSON."""
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def precision_in_effect(info: str, precision: str) -> PrecisionInEffect | None:
    """From a TensorRT engine inspector's JSON: each compute layer in the type of its first
    input. None when the engine holds layer names only (built without detailed verbosity)."""
    try:
        doc = parse_json(info)
    except ValueError:
        return None
    layers = doc.get("Layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        return None
    ops: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    opaque = myelin_fp16 = 0
    for layer in layers:
        kind = str(layer.get("LayerType", ""))
        ops[kind] += 1
        if kind.lower() == _MYELIN:
            opaque += 1
        elif any(word in kind.lower() for word in _COMPUTE):
            inputs = layer.get("Inputs") or [{}]
            first = inputs[0] if isinstance(inputs[0], dict) else {}
            fmt = str(first.get("Format/Datatype", "")).lower()
            ran[which := next((p for word, p in _TYPES if word in fmt), "other")] += 1
            myelin_fp16 += kind.lower() == _MYELIN_GEMM and which == "fp16"
    return PrecisionInEffect.counted(precision, ops, ran, opaque=opaque, myelin_fp16=myelin_fp16)
