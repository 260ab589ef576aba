"""The value types that callers of engine-init exchange with it: immutable dataclasses from the
standard library, so importing them costs nothing and they cross threads freely. The compiler's
request, which carries the config's sections, is in :mod:`app.config`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


#: JetPack token of hosts that are not Jetsons (x86 dGPU, CI): ``..._jpnone_...``.
NO_JETPACK = "none"
#: What ``keep_fp32`` keeps when the config says nothing: the layers of a LayerNorm that an
#: export below opset 17 decomposed (TensorRT warns they may overflow in FP16).
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
    """What the engine is tied to: GPU compute capability, JetPack and TensorRT release.

    ``sm`` is the compute capability as an integer (8.7 -> 87, 0 when no GPU was probed),
    ``jetpack`` the JetPack release (``"6.2"``), :data:`NO_JETPACK` off-Jetson, or
    ``"l4t36.5.0"`` for an L4T release engine-init does not know (never a guess), and ``trt``
    the TensorRT ``major.minor`` (``"none"`` without TensorRT). The optional fields feed the
    provenance record, not the file name; ``cuda_device`` is the index of the probed GPU, which
    a backend selects in the thread that builds.
    """

    sm: int
    jetpack: str
    trt: str
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
    """Everything a runtime needs to build one engine.

    The compiler fills ``model_name`` and ``engine_path`` (where the runtime must publish the
    engine through :class:`app.cache.hashing.Sha256Sidecar`); the rest comes from the config.
    ``input_shapes`` maps input names to profiles; ``None`` as key is the single-input
    shorthand (``expected_input_shape``) that the runtime binds to the model's only input.
    """

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
    #: TensorRT: layers kept in float32 under fp16/int8 (app.backends.tensorrt.build)
    keep_fp32: tuple[str, ...] = KEEP_FP32_DEFAULT
    #: the GPU it is built and checked on (the host's probed ``cuda_device``); not a setting
    cuda_device: int = 0
    #: Called at each progress event of the build; its fields are added to the event (the
    #: build governor's ETA). Not a build setting.
    progress_fields: Callable[[], dict[str, Any]] | None = field(default=None, compare=False,
                                                                 repr=False)

    def fingerprint_fields(self) -> dict[str, object]:
        """The settings that change the built artifact, for the provenance fingerprint."""
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
    """Whether an engine was compiled in this run or taken from the cache."""

    BUILT = "built"
    REUSED = "reused"
    PROMOTED = "promoted"  # a fleet candidate checked on this host (app.fleet.promote)


@dataclass(frozen=True)
class EngineCompileResult:
    """The outcome for one backbone; ``compile_duration_s`` is ``None`` when reused."""

    entry: EngineCacheEntry
    outcome: CompileOutcome
    compile_duration_s: float | None
    #: The accuracy gate's report (``AccuracyReport.to_json``) when the model is checked.
    accuracy: dict[str, Any] | None = None
    #: What the compute nodes run in (``PrecisionInEffect.as_dict``) when fp16 or int8 was
    #: checked after the build (kept in the record: a reused engine has it too).
    precision_in_effect: dict[str, Any] | None = None
