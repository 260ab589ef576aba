"""What the compiler asks of a backend ("inference runtime").

The only required method is ``compile_engine``; everything else is optional and read with
``getattr`` so that a plain object with just ``compile_engine`` works (it gets TensorRT-style
names from :class:`app.cache.names.EngineFilenameSchema` and the request's host).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from app.types import BuildConfig, EngineCacheEntry, HostCapabilities, PrecisionMode

__all__ = ["BackendIdentity", "InferenceRuntime", "NamedRuntime", "identity_of"]


@runtime_checkable
class InferenceRuntime(Protocol):
    """Builds one engine and publishes it at ``build_config.engine_path`` with its sidecar."""

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry: ...


class NamedRuntime(InferenceRuntime, Protocol):
    """A runtime that names its artifacts and says what it is (for provenance records)."""

    name: str

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str: ...

    def version(self) -> str: ...

    def device_name(self) -> str: ...


class BackendIdentity:
    """The provenance facts of a runtime, with safe defaults for plain runtimes."""

    def __init__(self, name: str, version: str, device: str) -> None:
        self.name, self.version, self.device = name, version, device


def identity_of(runtime: object, host: HostCapabilities) -> BackendIdentity:
    """Name, full version and device of ``runtime``, falling back to the host's facts."""
    name = getattr(runtime, "name", None) or type(runtime).__name__
    version_fn = getattr(runtime, "version", None)
    device_fn = getattr(runtime, "device_name", None)
    version = str(version_fn()) if callable(version_fn) else (host.trt_full or host.trt)
    device = str(device_fn()) if callable(device_fn) else host.device_name
    return BackendIdentity(str(name), version, device)
