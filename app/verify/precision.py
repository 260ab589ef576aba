"""Did the precision that was asked take effect? What an ONNX Runtime artifact really runs.

An engine can be accurate and still not be what was asked: ONNX Runtime's CPU provider has
no FP16 convolution, so an "fp16" model runs its Conv nodes in float32 behind Cast nodes, and
its static quantization leaves nodes inside ``If`` branches (Silero VAD's LSTM) in float32.
The accuracy gate cannot see either. This runs the artifact once with ONNX Runtime's profiler
on and reads, for every compute node that ran (convolutions, matrix products, recurrent and
attention nodes), the element types of its inputs.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import EngineBuildError

__all__ = ["PrecisionInEffect", "ort_precision_in_effect"]

_COMPUTE = ("Conv", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")
_LOW = {"fp16": {"float16"}, "int8": {"int8", "uint8"}}


def _is_compute(op: str) -> bool:
    return any(word in op for word in _COMPUTE)


@dataclass(frozen=True)
class PrecisionInEffect:
    """``compute_nodes`` ran; ``in_precision`` of them took inputs of the asked type."""

    asked: str
    compute_nodes: int
    in_precision: int
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def took_effect(self) -> bool:
        return self.asked == "fp32" or self.in_precision > 0

    def describe(self) -> str:
        if self.asked == "fp32":
            return f"{self.compute_nodes} compute nodes in float32"
        return f"{self.in_precision} of {self.compute_nodes} compute nodes run in {self.asked}"

    def as_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "compute_nodes": self.compute_nodes,
                "in_precision": self.in_precision, "took_effect": self.took_effect,
                "ops": dict(self.ops)}


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
    compute = in_precision = 0
    low = _LOW.get(precision, set())
    for event in trace if isinstance(trace, list) else []:
        args = event.get("args") or {}
        op = args.get("op_name")
        if event.get("cat") != "Node" or not isinstance(op, str) or \
                not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ops[op] += 1
        if _is_compute(op):
            compute += 1
            types = {t for shape in args.get("input_type_shape", []) for t in shape}
            in_precision += bool(types & low)
    return PrecisionInEffect(precision, compute, in_precision, dict(sorted(ops.items())))
