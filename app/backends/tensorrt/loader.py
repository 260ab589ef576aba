"""Loading TensorRT at run time, and what ``backend: auto`` may not do quietly on a Jetson.

On the JetPack bases, ``import tensorrt`` works only once the NVIDIA runtime has mounted the
host's driver libraries (``libnvdla_compiler.so``, libcuda... are placeholders in the image):
started without it, the import fails with a loader error (ImportError, or OSError from the
package's own preloading of libnvinfer). That is exit 69 naming the loader error, not a
traceback. The same missing runtime makes the GPU probe fail, and ``auto`` would then choose
ONNX Runtime: on a Jetson with TensorRT installed that is refused (the robot expects TensorRT
engines); elsewhere it is a warning event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app import events
from app.errors import BackendUnavailableError
from app.host.probe import tensorrt_package

if TYPE_CHECKING:
    from app.host.probe import HostReport


_HINT = ("run the container with the NVIDIA runtime (compose: runtime: nvidia) and the video "
         "group, which mount the host's driver libraries")


def import_tensorrt(purpose: str = "a TensorRT build") -> Any:
    """``import tensorrt``, the one place it is imported; BackendUnavailableError saying that
    ``purpose`` needs it when it is not installed, naming the loader error when it is but fails."""
    if tensorrt_package() is None:
        raise BackendUnavailableError(f"{purpose} needs TensorRT, which is not installed here",
                                      hint="run it in the image for this JetPack, where the "
                                           "engine was built, or use backend: onnxruntime")
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"TensorRT is installed but cannot be loaded: {type(exc).__name__}: {exc}",
            hint=_HINT) from exc
    return tensorrt


def check_auto_choice(report: HostReport, chosen: str, logger: logging.Logger) -> None:
    """After ``backend: auto`` chose ``chosen``: refuse ONNX Runtime on a Jetson whose TensorRT
    is installed but whose GPU cannot be used; elsewhere say so in a warning event."""
    if chosen == "tensorrt" or not report.tensorrt.present:
        return
    why = report.gpu_error or "no GPU was found"
    if report.release.l4t:
        raise BackendUnavailableError(
            f"backend auto: this Jetson (L4T {report.release.l4t}) has TensorRT "
            f"{report.tensorrt.version}, but its GPU cannot be used ({why}); auto would build "
            "ONNX Runtime CPU models instead", hint=f"{_HINT}; or set backend: onnxruntime")
    events.emit(logger, logging.WARNING, events.HOST_WARNING,
                f"backend auto: TensorRT {report.tensorrt.version} is installed but the GPU "
                f"cannot be used ({why}): building with {chosen}", backend=chosen)
