"""engine-init: get inference engines ready before a robot's software starts.

The public API, resolved on first use (PEP 562): ``import app.cli`` loads only what a command
needs, and no heavy SDK is imported here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EngineFilenameSchema": "app.cache.names",
    "OrtFilenameSchema": "app.cache.names",
    "Sha256Sidecar": "app.cache.hashing",
    "EngineCompiler": "app.compiler",
    "InferenceRuntime": "app.backends.base",
    **{name: "app.errors" for name in (
        "BackendUnavailableError", "BuildCancelledError", "CacheWriteError", "CalibrationCacheError",
        "ConfigError", "EngineBuildError", "EngineInitError", "HostProbeError", "LockTimeoutError",
        "ModelDataError")},
    **{name: "app.config" for name in ("BackboneSpec", "EngineCompileRequest")},
    **{name: "app.values" for name in (
        "BuildConfig", "CompileOutcome", "EngineCacheEntry", "EngineCompileResult",
        "HostCapabilities", "InputProfile", "PrecisionMode")},
}
__all__ = [
    "BackboneSpec",
    "BackendUnavailableError",
    "BuildCancelledError",
    "BuildConfig",
    "CacheWriteError",
    "CalibrationCacheError",
    "CompileOutcome",
    "ConfigError",
    "EngineBuildError",
    "EngineCacheEntry",
    "EngineCompileRequest",
    "EngineCompileResult",
    "EngineCompiler",
    "EngineFilenameSchema",
    "EngineInitError",
    "HostCapabilities",
    "HostProbeError",
    "InferenceRuntime",
    "InputProfile",
    "LockTimeoutError",
    "ModelDataError",
    "OrtFilenameSchema",
    "PrecisionMode",
    "Sha256Sidecar",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from app.backends.base import InferenceRuntime
    from app.cache.hashing import Sha256Sidecar
    from app.cache.names import EngineFilenameSchema, OrtFilenameSchema
    from app.compiler import EngineCompiler
    from app.config import BackboneSpec, EngineCompileRequest
    from app.errors import (
        BackendUnavailableError,
        BuildCancelledError,
        CacheWriteError,
        CalibrationCacheError,
        ConfigError,
        EngineBuildError,
        EngineInitError,
        HostProbeError,
        LockTimeoutError,
        ModelDataError,
    )
    from app.values import (
        BuildConfig,
        CompileOutcome,
        EngineCacheEntry,
        EngineCompileResult,
        HostCapabilities,
        InputProfile,
        PrecisionMode,
    )
