"""Runners: what the accuracy gate asks of an engine, and the ONNX Runtime ones.

A backend supplies an :class:`EngineRunner` for what it built: ``run`` takes ``{input name:
numpy array}`` and returns ``{output name: numpy array}`` for every output; ``close`` frees what
it holds. The reference is always the source ONNX model on ONNX Runtime's CPU provider with
graph optimizations off, so that it shares no rewrite with an ONNX Runtime candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from app.errors import EngineBuildError, ModelDataError

__all__ = ["EngineRunner", "OnnxReference", "OrtEngineRunner", "open_runner"]

_PROVIDERS = ["CPUExecutionProvider"]


@runtime_checkable
class EngineRunner(Protocol):
    """Runs one built engine on host arrays."""

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _OrtSession:
    """An ONNX Runtime CPU session whose outputs come back by name."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self.session = None


def _options(ort: Any) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # its own log: errors only (the gate's events say the rest)
    return options


class OnnxReference(_OrtSession):
    """The source ONNX model, unoptimized, on the CPU: what the engine must agree with."""

    def __init__(self, onnx_path: Path, model_name: str = "") -> None:
        import onnxruntime as ort

        options = _options(ort)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=_PROVIDERS)
        except Exception as exc:
            raise ModelDataError(f"{model_name}: ONNX Runtime cannot run {onnx_path} as the "
                                 f"accuracy reference: {str(exc)[:300]}",
                                 hint="check the model with onnx.checker, or set verify: io") from exc
        super().__init__(session)


class OrtEngineRunner(_OrtSession):
    """The ONNX Runtime backend's artifact (an ORT-format model) on the CPU."""

    def __init__(self, artifact: Path, model_name: str = "") -> None:
        import onnxruntime as ort

        options = _options(ort)
        options.add_session_config_entry("session.load_model_format", "ORT")
        try:
            session = ort.InferenceSession(str(artifact), options, providers=_PROVIDERS)
        except Exception as exc:
            raise EngineBuildError(f"{model_name}: the compiled model {artifact.name} does not "
                                   f"load for the accuracy check: {str(exc)[:300]}") from exc
        super().__init__(session)


def open_runner(backend: str, artifact: Path, model_name: str = "", *, cuda_device: int = 0,
                dla_core: int | None = None) -> EngineRunner:
    """The runner for an artifact of ``backend`` (a backend's ``name``); a TensorRT engine runs
    on GPU ``cuda_device`` and, built for a DLA, on core ``dla_core``."""
    if backend == "onnxruntime":
        return OrtEngineRunner(artifact, model_name)
    if backend == "tensorrt":
        from app.verify.trt_runner import TrtRunner

        return TrtRunner(artifact, model_name, cuda_device=cuda_device, dla_core=dla_core)
    raise EngineBuildError(f"{model_name}: the accuracy check cannot run {backend} engines",
                           hint="set verify: io for this model, or use the onnxruntime or "
                                "tensorrt backend")
