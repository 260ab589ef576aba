"""ONNX Runtime CPU sessions, their options built here only: the backend's artifact, the accuracy
gate's reference (optimizations off), and the precision in effect read out of a profiled run:
each compute node counts in the precision of its inputs
(docs/accuracy-gate.md#precision-in-effect-and-the-precision-check)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from app.backends.base import PrecisionInEffect
from app.cache.fsread import open_regular, parse_json, read_small
from app.errors import EngineBuildError, EngineInitError, ModelDataError

PROVIDERS = ["CPUExecutionProvider"]
_COMPUTE = ("Conv", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")
_TYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8",
          "uint8": "int8", "double": "fp64"}
_TRACE_MAX = 256 << 20


def session_options(*, ort_format: bool = False, optimization: str | None = None,
                    entries: dict[str, str] | None = None) -> Any:
    """ONNX Runtime's own log at errors only; ``optimization``: a ``GraphOptimizationLevel``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if ort_format:
        options.add_session_config_entry("session.load_model_format", "ORT")
    if optimization is not None:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    for key, value in (entries or {}).items():
        options.add_session_config_entry(key, value)
    return options


def open_session(model: str | bytes, options: Any, failure: str, *,
                 error: type[EngineInitError] = EngineBuildError, hint: str = "") -> Any:
    """The session, or ``error`` saying ``failure`` and why."""
    import onnxruntime as ort

    try:
        if isinstance(model, str):  # ONNX Runtime opens the path itself, blocking: a FIFO would hang it
            os.close(open_regular(model, follow_links=True))
        return ort.InferenceSession(model, options, providers=PROVIDERS)
    except Exception as exc:
        raise error(f"{failure}: {str(exc)[:300]}", hint=hint) from exc


class OrtRunner:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self.session = None


def open_engine(artifact: Path, model_name: str = "") -> OrtRunner:
    return OrtRunner(open_session(str(artifact), session_options(ort_format=True),
                                  f"{model_name}: the compiled model {artifact.name} does not "
                                  "load for the accuracy check"))


def open_reference(onnx_path: Path, model_name: str = "") -> OrtRunner:
    """The source ONNX model, unoptimized, on the CPU: what the engine must agree with."""
    return OrtRunner(open_session(
        str(onnx_path), session_options(optimization="ORT_DISABLE_ALL"),
        f"{model_name}: ONNX Runtime cannot run {onnx_path} as the accuracy reference",
        error=ModelDataError, hint="check the model with onnx.checker, or set verify: io"))


def precision_in_effect(artifact: Path, feeds: dict[str, Any], precision: str,
                        model_name: str = "") -> PrecisionInEffect:
    with tempfile.TemporaryDirectory(prefix="engine-init-profile-") as tmp:
        options = session_options(ort_format=True)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "run")
        failure = f"{model_name}: cannot profile {artifact.name} to see the precision it runs in"
        session = open_session(str(artifact), options, failure)
        try:
            session.run(None, feeds)
            trace = parse_json(read_small(session.end_profiling(), _TRACE_MAX))
        except Exception as exc:
            raise EngineBuildError(f"{failure}: {str(exc)[:300]}") from exc
    ops: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    for event in trace if isinstance(trace, list) else []:
        args = event.get("args") or {}
        op = args.get("op_name")
        if event.get("cat") != "Node" or not isinstance(op, str) or \
                not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ops[op] += 1
        if any(word in op for word in _COMPUTE):
            types = {_TYPES.get(t, t) for shape in args.get("input_type_shape", [])
                     for t in shape}
            # A quantized node also takes float scales: any input in the asked type counts.
            ran[next((p for p in (precision, "fp32", "fp16", "bf16") if p in types), "other")] += 1
    return PrecisionInEffect.counted(precision, ops, ran)
