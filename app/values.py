"""The value types callers exchange with engine-init (docs/python-api.md): frozen standard
dataclasses, cheap to import and safe across threads. The request is in :mod:`app.config`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


# The environment variables the job reads besides the config's ENGINE_INIT_<KEY> overrides
# (app.loading), which must not be read as config keys.
ENV_PREFIX = "ENGINE_INIT_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
LOG_FORMAT_ENV = ENV_PREFIX + "LOG_FORMAT"
FAULTS_ENV = ENV_PREFIX + "FAULTS"  # fault injection for the attack tests (app.cancel)
TERMINATION_LOG_ENV = ENV_PREFIX + "TERMINATION_LOG"
RESERVED_ENV = frozenset({CONFIG_ENV, LOG_FORMAT_ENV, FAULTS_ENV, TERMINATION_LOG_ENV})

NO_JETPACK = "none"  # the JetPack token off-Jetson (x86 dGPU, CI)
KEEP_FP32_DEFAULT: tuple[str, ...] = ("layernorm",)

Shape = tuple[int, ...]


class PrecisionMode(str, enum.Enum):
    """Arithmetic precision an engine is built for."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HostCapabilities:
    """What the engine is tied to; the optional fields feed the provenance record, not the name."""

    sm: int  # compute capability 8.7 -> 87; 0: no GPU probed
    jetpack: str  # "6.2", NO_JETPACK off-Jetson, "l4t36.5.0" for an unknown L4T release
    trt: str  # TensorRT major.minor, "none" without it
    trt_full: str = ""
    device_name: str = ""
    l4t: str = ""
    cuda_device: int = 0


@dataclass(frozen=True)
class InputProfile:
    """Shape range of one model input: fixed when ``min == opt == max``."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def fixed(cls, shape: Shape) -> InputProfile:
        return cls(tuple(shape), tuple(shape), tuple(shape))

    @property
    def is_fixed(self) -> bool:
        return self.min == self.opt == self.max

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildConfig:
    """Everything a runtime needs to build one engine at ``engine_path`` (published through
    :class:`app.cache.hashing.Sha256Sidecar`); an ``input_shapes`` key ``None`` is the
    single-input shorthand, bound to the model's only input."""

    precision: PrecisionMode
    model_name: str = ""
    engine_path: Path | None = None
    input_shapes: dict[str | None, InputProfile] = field(default_factory=dict)
    workspace_mb: int = 4096
    calibration_dir: Path | None = None
    cache_root: Path | None = None
    optimization_level: int = 3
    dla_core: int | None = None
    verify: str = "io"
    keep_fp32: tuple[str, ...] = KEEP_FP32_DEFAULT
    cuda_device: int = 0  # the probed GPU, not a setting
    # Fields added to each progress event of the build (the governor's ETA); not a setting.
    progress_fields: Callable[[], dict[str, Any]] | None = field(default=None, compare=False,
                                                                 repr=False)

    def fingerprint_fields(self) -> dict[str, object]:
        return {
            "precision": self.precision.value,
            "input_shapes": {
                ("" if k is None else k): v.as_dict()
                for k, v in sorted(self.input_shapes.items(), key=lambda kv: kv[0] or "")
            },
            "workspace_mb": self.workspace_mb,
            "optimization_level": self.optimization_level,
            "dla_core": self.dla_core,
            # Only when not the default: records made before the key existed stay valid.
            **({"keep_fp32": list(self.keep_fp32)} if self.keep_fp32 != KEEP_FP32_DEFAULT else {}),
        }


@dataclass(frozen=True)
class EngineCacheEntry:
    """One published engine: where it is, its digest, and the hardware it was built for."""

    engine_path: Path
    sha256_hex: str
    sm: int
    jp: str
    trt: str
    precision: PrecisionMode
    extras: dict[str, str] = field(default_factory=dict)


class CompileOutcome(str, enum.Enum):
    """Whether an engine was built, reused or promoted from a fleet candidate."""

    BUILT = "built"
    REUSED = "reused"
    PROMOTED = "promoted"


@dataclass(frozen=True)
class EngineCompileResult:
    """The outcome for one backbone; ``compile_duration_s`` is ``None`` when reused."""

    entry: EngineCacheEntry
    outcome: CompileOutcome
    compile_duration_s: float | None
    accuracy: dict[str, Any] | None = None  # AccuracyReport.to_json
    precision_in_effect: dict[str, Any] | None = None
