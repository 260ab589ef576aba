"""The backends, in one table; each is imported only when chosen. ``auto``: TensorRT when its
package is installed (found, not imported) and a GPU was probed, else ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import BackendUnavailableError
from app.host.probe import tensorrt_package
from app.values import HostCapabilities, PrecisionMode

if TYPE_CHECKING:  # the config imports this table: validate loads no backend
    from app.backends.base import InferenceRuntime


@dataclass(frozen=True)
class Backend:
    factory: Callable[[HostCapabilities], InferenceRuntime]
    needs_gpu: bool
    precisions: frozenset[PrecisionMode]


def _tensorrt(host: HostCapabilities) -> InferenceRuntime:
    from app.backends.tensorrt.runtime import TensorRTRuntime

    return TensorRTRuntime(host)


def _onnxruntime(host: HostCapabilities) -> InferenceRuntime:
    from app.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(host)


BACKENDS: dict[str, Backend] = {
    "tensorrt": Backend(_tensorrt, needs_gpu=True, precisions=frozenset(PrecisionMode)),
    "onnxruntime": Backend(_onnxruntime, needs_gpu=False, precisions=frozenset(PrecisionMode)),
}
AUTO = "auto"
BACKEND_NAMES = (AUTO, *BACKENDS)


def resolve_backend_name(requested: str, gpu_present: bool) -> str:
    if requested != AUTO:
        return requested
    return "tensorrt" if tensorrt_package() is not None and gpu_present else "onnxruntime"


def create_backend(name: str, host: HostCapabilities) -> InferenceRuntime:
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}",
                                      hint=f"choose one of {sorted(BACKENDS)}") from None
    try:
        return backend.factory(host)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name} is not installed here ({exc.name or exc})",
            hint="use the image for this JetPack, or backend: onnxruntime"
            if name == "tensorrt" else "pip install 'engine-init[onnxruntime]'",
        ) from exc
