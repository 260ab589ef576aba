"""What the compiler asks of a backend: the :class:`InferenceRuntime` protocol.

Every backend of :mod:`app.backends.registry` implements all of it. A caller's own runtime may
implement only ``compile_engine`` (:class:`PlainRuntime`, the original API):
:func:`as_inference_runtime` then wraps it, once per request, in :class:`PlainRuntimeAdapter`,
which names its artifacts after TensorRT's scheme (:class:`app.cache.names.EngineFilenameSchema`)
and describes it with the request's host. A runtime that has some of the other members but not
all of them is treated as plain.

A backend may also define ``timing_cache_present(build_config) -> bool``: whether a build now
finds a timing cache, which the build governor's ETA takes into account (TensorRT does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from app.cache.names import EngineFilenameSchema
from app.errors import EngineBuildError
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, PrecisionMode

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface
    from app.verify.precision import PrecisionInEffect

__all__ = ["InferenceRuntime", "PlainRuntime", "PlainRuntimeAdapter", "as_inference_runtime"]


class PlainRuntime(Protocol):
    """Builds one engine and publishes it at ``build_config.engine_path`` with its sidecar."""

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry: ...


@runtime_checkable
class InferenceRuntime(Protocol):
    """A backend: builds engines, names them, and says what it is for provenance records."""

    #: The registry name ("tensorrt", "onnxruntime"), recorded as ``backend``.
    name: str

    def version(self) -> str:
        """The full version of what builds the engines (TensorRT 10.3.0.30, ONNX Runtime 1.20.1)."""
        ...

    def device_name(self) -> str:
        """What the engines are built for (the GPU's name, the CPU model)."""
        ...

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str:
        """The file name of ``model_name``'s artifact in the cache."""
        ...

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        """Build one engine and publish it at ``build_config.engine_path`` with its sidecar."""
        ...

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        """What the compute nodes of the built ``artifact`` run in; None: cannot say."""
        ...

    def device_free_memory(self) -> int | None:
        """Free bytes of the discrete GPU that builds run on (the build governor bounds the
        workspace by them); None where host memory is what counts (a CPU, a Jetson)."""
        ...

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        """Check an artifact built elsewhere (a fleet candidate) as a fresh build is checked,
        against ``model``, the interface of the ONNX model it was built from; raises, with the
        backend's own words, when it does not pass."""
        ...

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        """The timing cache a build under ``cache_root`` reads and saves; None: none is kept."""
        ...

    def timing_cache_present(self, build_config: BuildConfig) -> bool | None:
        """Whether this build will load a timing cache (the ETA's basis); None: no such cache."""
        ...


class PlainRuntimeAdapter:
    """A :class:`PlainRuntime` seen as an :class:`InferenceRuntime` on ``host``."""

    def __init__(self, runtime: PlainRuntime, host: HostCapabilities) -> None:
        self.runtime = runtime
        self.host = host
        self.name = type(runtime).__name__

    def version(self) -> str:
        return self.host.trt_full or self.host.trt

    def device_name(self) -> str:
        return self.host.device_name

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str:
        return EngineFilenameSchema.build(model_name=model_name, sm=self.host.sm,
                                          jetpack=self.host.jetpack, trt=self.host.trt,
                                          precision=precision)

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        return self.runtime.compile_engine(model_path, build_config)

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        return None  # a plain runtime's artifacts are opaque

    def device_free_memory(self) -> int | None:
        return None

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        raise EngineBuildError(f"the {self.name} runtime cannot check an artifact built elsewhere")

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        return None

    def timing_cache_present(self, build_config: BuildConfig) -> bool | None:
        return None


def as_inference_runtime(runtime: InferenceRuntime | PlainRuntime,
                         host: HostCapabilities) -> InferenceRuntime:
    """``runtime`` itself when it implements the whole protocol, else it adapted to ``host``."""
    if isinstance(runtime, InferenceRuntime):
        return runtime
    return PlainRuntimeAdapter(runtime, host)
