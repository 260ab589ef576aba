"""The backends, in one dict; each is imported only when chosen.

``auto`` picks TensorRT exactly when its Python package is importable (found without importing
it) and a GPU was probed, else ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from app.backends.base import InferenceRuntime
from app.errors import BackendUnavailableError
from app.types import HostCapabilities

__all__ = ["BACKENDS", "create_backend", "resolve_backend_name"]


def _tensorrt(host: HostCapabilities) -> InferenceRuntime:
    from app.backends.tensorrt.runtime import TensorRTRuntime

    return TensorRTRuntime(host)


def _onnxruntime(host: HostCapabilities) -> InferenceRuntime:
    from app.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(host)


BACKENDS: dict[str, Callable[[HostCapabilities], InferenceRuntime]] = {
    "tensorrt": _tensorrt,
    "onnxruntime": _onnxruntime,
}
#: Whether each backend needs a GPU (decides whether the probe may fail).
NEEDS_GPU = {"tensorrt": True, "onnxruntime": False}


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def resolve_backend_name(requested: str, gpu_present: bool) -> str:
    if requested != "auto":
        return requested
    return "tensorrt" if tensorrt_importable() and gpu_present else "onnxruntime"


def create_backend(name: str, host: HostCapabilities) -> InferenceRuntime:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}",
                                      hint=f"choose one of {sorted(BACKENDS)}") from None
    try:
        return factory(host)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name} is not installed here ({exc.name or exc})",
            hint="use the image for this JetPack, or backend: onnxruntime"
            if name == "tensorrt" else "pip install 'engine-init[onnxruntime]'",
        ) from exc
