"""Did the precision that was asked take effect? What a built artifact's compute nodes run in.

An engine can be accurate and still not be what was asked: ONNX Runtime's CPU provider has
no FP16 convolution, so an "fp16" model runs its Conv nodes in float32 behind Cast nodes, and
its static quantization leaves nodes inside ``If`` branches (Silero VAD's LSTM) in float32;
TensorRT with the INT8 flag picks FP16 kernels wherever they are faster. The accuracy gate
cannot see either. Compute nodes are convolutions, matrix products, recurrent and attention
nodes; each is counted in the precision of its inputs:

- ONNX Runtime (:func:`ort_precision_in_effect`): the artifact runs once with the profiler on,
  which names every node that ran and the element types of its inputs;
- TensorRT (:func:`trt_precision_in_effect`): the engine inspector's JSON (the engine built
  with detailed profiling verbosity) gives each layer's type and its inputs' formats. What a
  release can report differs for transformers, which TensorRT hands to its Myelin compiler:
  8.x shows each such region as one opaque ``"LayerType": "Myelin"`` ForeignNode
  (NVIDIA/TensorRT#2576), counted apart as not inspectable; 10.x shows its kernels as ``gemm``
  and ``kgen`` layers with bare formats ("Half", "Int8"; TREx ``trex/colors.py:66,78-79``). Under
  the INT8 flag Myelin picks the fastest kernels and often keeps GEMMs in FP16 ("it won't ensure
  every layer run in int8", #3784): INT8 asked and Myelin GEMMs in fp16 is reduced precision
  that took effect partially (a warning), not an ignored flag (exit 70).

:func:`enforce` is what ``run`` applies after a build (README, "Accuracy gate").
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events
from app.errors import EngineBuildError
from app.values import BuildConfig, PrecisionMode

if TYPE_CHECKING:
    from app.backends.base import InferenceRuntime

__all__ = ["PrecisionInEffect", "enforce", "ort_precision_in_effect", "trt_precision_in_effect"]

_COMPUTE = ("Conv", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")
#: TensorRT's layer types: CaskConvolution, CaskGemmMatrixMultiply, gemm, MatrixMultiply...
_TRT_COMPUTE = ("conv", "gemm", "matrixmultiply", "fullyconnected", "rnn", "attention")
_ORT_TYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8",
              "uint8": "int8", "double": "fp64"}
#: Words of TensorRT's "Format/Datatype" ("Int8", "Half", "Float" without an execution
#: context; "Row major linear FP32", "Channel major FP16 format where channel % 8 == 0"...).
#: "UInt8" before "Int8" and "BFloat16" before "Float" (TREx activations.py's format table).
_TRT_TYPES = (("uint8", "uint8"), ("int8", "int8"), ("fp8", "fp8"), ("bfloat16", "bf16"),
              ("bf16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
              ("float", "fp32"))
#: A Myelin region as TensorRT 8.x reports it (one opaque layer), and the GEMM kernels of one
#: as 10.x reports them.
_MYELIN, _MYELIN_GEMM = "myelin", "gemm"


def _is_compute(op: str) -> bool:
    return any(word in op for word in _COMPUTE)


@dataclass(frozen=True)
class PrecisionInEffect:
    """``compute_nodes`` ran; ``in_precision`` of them in the asked precision; ``ran``: how many
    in each precision (``{"int8": 5, "fp16": 2}``); ``ops``: every node or layer type seen."""

    asked: str
    compute_nodes: int
    in_precision: int
    ops: dict[str, int] = field(default_factory=dict)
    ran: dict[str, int] = field(default_factory=dict)
    #: TensorRT with ``dla_core``: how many layers run on the DLA (dla.check_placement)
    dla: dict[str, Any] | None = None
    #: TensorRT 8.x: Myelin regions, whose layers the inspector does not show (not counted)
    opaque: int = 0
    #: TensorRT 10.x: Myelin GEMM kernels among the compute nodes, in fp16
    myelin_fp16: int = 0

    @property
    def took_effect(self) -> bool:
        if self.asked == "fp32" or self.in_precision > 0:
            return True
        # INT8 under implicit quantization: Myelin keeping every GEMM in FP16 (#3784) is
        # reduced precision, not an ignored flag, when nothing else stayed in float32.
        return self.asked == "int8" and self.myelin_fp16 > 0 and \
            self.myelin_fp16 == self.ran.get("fp16", 0) == self.compute_nodes

    def describe(self) -> str:
        hidden = (f" (+{self.opaque} Myelin region(s) this TensorRT cannot inspect)"
                  if self.opaque else "")
        if self.asked == "fp32":
            return f"{self.compute_nodes} compute nodes in float32{hidden}"
        kept = (f"; Myelin kept {self.myelin_fp16} GEMM(s) in fp16" if self.myelin_fp16 and
                self.asked == "int8" else "")
        return (f"{self.in_precision} of {self.compute_nodes} compute nodes run in "
                f"{self.asked}{kept}{hidden}")

    def what_ran(self) -> str:
        return ", ".join(f"{n} in {p}" for p, n in sorted(self.ran.items(), key=lambda i: -i[1]))

    def as_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "compute_nodes": self.compute_nodes,
                "in_precision": self.in_precision, "took_effect": self.took_effect,
                "ran": dict(self.ran), "ops": dict(self.ops),
                **({"dla": dict(self.dla)} if self.dla is not None else {}),
                **({"not_inspectable": self.opaque} if self.opaque else {}),
                **({"myelin_fp16": self.myelin_fp16} if self.myelin_fp16 else {})}


def _effect(asked: str, ops: Counter[str], ran: Counter[str]) -> PrecisionInEffect:
    return PrecisionInEffect(asked, sum(ran.values()), ran[asked], dict(sorted(ops.items())),
                             dict(sorted(ran.items())))


def ort_precision_in_effect(artifact: Path, feeds: dict[str, Any], precision: str,
                            model_name: str = "") -> PrecisionInEffect:
    """Run the ORT-format ``artifact`` once on ``feeds`` with profiling, and count."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="engine-init-profile-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.load_model_format", "ORT")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "run")
        try:
            session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
            session.run(None, feeds)
            trace = json.loads(Path(session.end_profiling()).read_text())
        except Exception as exc:
            raise EngineBuildError(f"{model_name}: cannot profile {artifact.name} to see the "
                                   f"precision it runs in: {str(exc)[:300]}") from exc
    ops: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    for event in trace if isinstance(trace, list) else []:
        args = event.get("args") or {}
        op = args.get("op_name")
        if event.get("cat") != "Node" or not isinstance(op, str) or \
                not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ops[op] += 1
        if _is_compute(op):
            types = {_ORT_TYPES.get(t, t) for shape in args.get("input_type_shape", [])
                     for t in shape}
            # A quantized node also takes float scales: any input in the asked type counts.
            ran[next((p for p in (precision, "fp32", "fp16", "bf16") if p in types), "other")] += 1
    return _effect(precision, ops, ran)


def trt_precision_in_effect(info: str, precision: str) -> PrecisionInEffect | None:
    """From a TensorRT engine inspector's JSON: each compute layer in the type of its first
    input. None when the engine holds layer names only (built without detailed verbosity)."""
    try:
        doc = json.loads(info)
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
        elif any(word in kind.lower() for word in _TRT_COMPUTE):
            inputs = layer.get("Inputs") or [{}]
            first = inputs[0] if isinstance(inputs[0], dict) else {}
            fmt = str(first.get("Format/Datatype", "")).lower()
            ran[which := next((p for word, p in _TRT_TYPES if word in fmt), "other")] += 1
            myelin_fp16 += kind.lower() == _MYELIN_GEMM and which == "fp16"
    return replace(_effect(precision, ops, ran), opaque=opaque, myelin_fp16=myelin_fp16)


def enforce(runtime: InferenceRuntime, model_path: Path, artifact: Path, config: BuildConfig,
            logger: logging.Logger) -> dict[str, Any] | None:
    """After a build asked fp16 or int8 (not with ``verify: none``): what its compute nodes run
    in, for the record; EngineBuildError (exit 70) when none runs in the asked precision. None:
    nothing to say (fp32, or a runtime that cannot tell)."""
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
