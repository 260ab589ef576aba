"""engine-init: get inference engines ready before a robot's software starts.

The public API, importable from ``app`` directly. Importing it loads no heavy SDK: TensorRT,
ONNX Runtime, onnx, numpy and cuda-python are imported only by the code that uses them.
"""

from app.cache.names import EngineFilenameSchema, OrtFilenameSchema
from app.cache.sidecar import Sha256Sidecar
from app.compiler import EngineCompiler
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
from app.types import (
    BackboneSpec,
    BuildConfig,
    CompileOutcome,
    EngineCacheEntry,
    EngineCompileRequest,
    EngineCompileResult,
    HostCapabilities,
    InputProfile,
    PrecisionMode,
)

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
    "InputProfile",
    "LockTimeoutError",
    "ModelDataError",
    "OrtFilenameSchema",
    "PrecisionMode",
    "Sha256Sidecar",
]
