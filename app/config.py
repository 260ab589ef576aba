"""The job's configuration (docs/configuration.md) and the compiler's request made from it
(docs/python-api.md). Validation context: ``base_dir`` (relative paths), ``check_files``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, GetPydanticSchema, Tag, ValidationInfo, model_validator
from pydantic_core import core_schema as cs
from typing_extensions import Self

from app.backends.registry import BACKEND_NAMES
from app.cache.names import (
    calibration_files,
    calibration_folder,
    check_model_name,
    default_candidates_root,
)
from app.config_sections import (
    STRICT,
    AccuracyConfig,
    ConfigPath,
    ExistingFile,
    FleetConfig,
    GovernorConfig,
    PromPath,
)
from app.values import KEEP_FP32_DEFAULT, HostCapabilities, InputProfile, PrecisionMode, Shape

if TYPE_CHECKING:
    BackendChoice = str
else:
    BackendChoice = Literal[BACKEND_NAMES]


DEFAULT_CACHE_ROOT = Path("/var/cache/engine-init")
DEFAULT_MARKER = Path("/run/engine-init/ready.json")
#: A dimension fits TensorRT's int32.
Dims = list[Annotated[int, Field(gt=0, le=2**31 - 1)]]


class ProfileConfig(BaseModel):
    """A dynamic input's range: TensorRT builds for ``opt`` and accepts ``min``..``max``."""

    model_config = STRICT
    min: Dims = Field(description="Smallest shape the engine accepts.")
    opt: Dims = Field(description="Shape TensorRT optimizes for.")
    max: Dims = Field(description="Largest shape the engine accepts.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError("min, opt and max must have the same number of dimensions")
        for i, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if not lo <= mid <= hi:
                raise ValueError(f"dimension {i}: need min <= opt <= max, got {lo}, {mid}, {hi}")
        return self


def _shape_form(value: Any) -> str | None:
    return "range" if isinstance(value, dict) else "dims" if isinstance(value, list) else None


# A fixed shape is a list, a dynamic one a mapping: the form picks the schema, so an error
# speaks of the form the user wrote (and the location says which: ``.dims`` or ``.range``).
InputShape = Annotated[
    Annotated[Dims, Tag("dims")] | Annotated[ProfileConfig, Tag("range")],
    Discriminator(_shape_form, custom_error_type="shape_form",
                  custom_error_message="Input should be a list of dimensions or a mapping of "
                                       "min, opt and max"),
]


class BackboneConfig(BaseModel):
    """One model: its ONNX file, input shapes and what may differ from the job's settings."""

    model_config = STRICT
    model_name: Annotated[str, GetPydanticSchema(
        lambda _t, _h: cs.no_info_after_validator_function(check_model_name, cs.str_schema()))
    ] = Field(description="Names the engine files: letters, digits, '_', '-' and '.'; no '__', "
                          "no leading dot, at most 100 characters; unique in the config.")
    onnx_path: ExistingFile = Field(description="The ONNX model (an existing file).")
    expected_input_shape: Annotated[Dims, Field(min_length=1)] | None = Field(
        None, description="Single-input shorthand: the input's fixed shape, positive dimensions. "
                          "Give this or input_shapes, not both.")
    input_shapes: dict[str, InputShape] | None = Field(
        None, description="Per input name: a fixed shape ([1, 3, 224, 224]) or a range "
                          "({min, opt, max}) for a dynamic input.")
    precision: PrecisionMode | None = Field(
        None, description="This model's precision; null: the top-level precision.")
    dla_core: Annotated[int, Field(ge=0, le=15)] | None = Field(
        None, description="TensorRT: build for this DLA core (0..15), with GPU fallback; null: "
                          "the GPU.")
    keep_fp32: list[str] | None = Field(
        None, description="TensorRT under fp16/int8: layers kept in float32 (precision "
                          "constraints, preferred): ONNX node names, ONNX op types (Softmax), or "
                          "'layernorm' (the ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div chain of "
                          "a LayerNorm exported below opset 17, which TensorRT warns may "
                          "overflow in FP16); null: ['layernorm']; []: none.")
    verify: Literal["io", "infer", "none", "accuracy"] | None = Field(
        None, description="Check after a build: io (inputs and outputs match the ONNX model), "
                          "infer (io and a warm-up inference), accuracy (io, then the engine's "
                          "outputs against the ONNX model's on ONNX Runtime CPU; exit 70 when "
                          "they differ beyond the tolerance) or none; null: the top-level verify.")
    accuracy: AccuracyConfig | None = Field(
        None, description="This model's accuracy settings; keys given here override the "
                          "top-level accuracy's.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.expected_input_shape is not None and self.input_shapes is not None:
            raise ValueError("give expected_input_shape or input_shapes, not both")
        for name, shape in (self.input_shapes or {}).items():
            if isinstance(shape, list) and not shape:
                raise ValueError(f"input_shapes.{name}: needs at least one dimension")
        return self


class EngineInitConfig(BaseModel):
    """The whole job's settings; ``engine-init schema`` prints them as JSON Schema."""

    model_config = STRICT
    cache_root: ConfigPath = Field(
        DEFAULT_CACHE_ROOT, description="Folder of the engine cache (the engine-cache volume); "
                                        "created with its parents when missing.")
    readiness_marker: ConfigPath = Field(
        DEFAULT_MARKER, description="File written last, atomically, when every engine is ready "
                                    "(removed when a run starts or fails). A file there that is "
                                    "not an engine-init marker is refused, never replaced.")
    backend: BackendChoice = Field(
        "auto", description="auto: TensorRT when it is importable and a GPU is present, else "
                            "ONNX Runtime.")
    precision: PrecisionMode = Field(
        PrecisionMode.FP16, description="Every model's precision unless backbones[].precision "
                                        "says otherwise.")
    workspace_mb: int = Field(4096, gt=0, le=1 << 20,
                              description="TensorRT builder workspace, in MiB, 1..1048576.")
    optimization_level: int = Field(
        3, ge=0, le=5, description="TensorRT builder optimization level, 0..5.")
    calibration_path: ConfigPath | None = Field(
        None, description="INT8 calibration data: <calibration_path>/<model_name>/*.npz or "
                          "*.npy, one batch a file.")
    cuda_device: int = Field(0, ge=0, le=255,
                             description="CUDA device index to probe and build on, 0..255.")
    jetpack: Annotated[str, Field(pattern=r"^\d+\.\d+(\.\d+)?$")] | None = Field(
        None, description="JetPack release (e.g. 6.2) to assume when the host's L4T release is "
                          "not in engine-init's table.")
    lock_timeout_s: float = Field(
        600.0, gt=0, le=604800, description="Seconds a run waits for the cache lock before it "
                                            "gives up (exit 75); above 0, at most a week "
                                            "(604800).")
    strict_onnx_hash: bool = Field(
        False, description="Re-hash every ONNX file on every boot instead of trusting an "
                           "unchanged size, mtime, ctime and inode.")
    signing_key_file: ConfigPath | None = Field(
        None, description="HMAC key file (e.g. a Docker secret): records and the marker are "
                          "signed, and only signed ones are trusted.")
    allow_world_writable_cache: bool = Field(
        False, description="Accept a cache_root anyone may write to (refused by default: "
                           "anyone could plant an engine).")
    trust_untracked_engines: bool = Field(
        True, description="Reuse an engine whose origin is unknown (a valid sha256 sidecar but no "
                          "provenance record, e.g. baked into an image, or a record written "
                          "before records carried the hardware identity), with a "
                          "c10.engine.provenance.untracked warning, and record it; false: "
                          "rebuild it (a fleet that ships engines only through signed bundles).")
    metrics_textfile: PromPath | None = Field(
        None, description="Prometheus textfile (must end in .prom) written atomically at the end "
                          "of every run, success or failure, for node_exporter's textfile "
                          "collector; null: off.")
    fleet: FleetConfig = Field(
        default_factory=FleetConfig,
        description="Registry and keys of the fleet commands (docs/fleet.md).")
    verify: Literal["io", "infer", "none", "accuracy"] = Field(
        "io", description="Every model's check after a build unless backbones[].verify says "
                          "otherwise (see backbones[].verify).")
    accuracy: AccuracyConfig | None = Field(
        None, description="Accuracy settings of every model checked with verify: accuracy.")
    governor: GovernorConfig = Field(
        default_factory=lambda: GovernorConfig.model_validate({}),
        description="The build governor: memory, power mode and temperatures checked before "
                    "each build.")
    backbones: list[BackboneConfig] = Field(
        min_length=1, description="The models to make ready, one engine each.")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        seen: set[str] = set()
        for b in self.backbones:
            if b.model_name in seen:
                raise ValueError(f"backbones: duplicate model_name {b.model_name!r}")
            seen.add(b.model_name)
        if not (info.context or {}).get("check_files", True):
            return self
        for b in self.backbones:
            if (b.precision or self.precision) is PrecisionMode.INT8 and not self._has_calibration(b):
                raise ValueError(
                    f"backbones[{b.model_name}]: int8 needs calibration data in "
                    f"calibration_path/{b.model_name}/ (.npz or .npy) or a calibration cache in "
                    f"{calibration_folder(self.cache_root)}"
                )
        return self

    def _has_calibration(self, b: BackboneConfig) -> bool:
        if self.calibration_path is not None and calibration_files(self.calibration_path / b.model_name):
            return True
        cache_dir = calibration_folder(self.cache_root)
        return cache_dir.is_dir() and any(cache_dir.glob(f"{b.model_name}__*.calib"))

    @property
    def candidates_root(self) -> Path:
        return self.fleet.candidates_dir or default_candidates_root(self.cache_root)


@dataclass(frozen=True)
class BackboneSpec:
    """One model of the corpus; ``expected_input_shape`` is the single-input shorthand."""

    model_name: str
    onnx_path: Path
    expected_input_shape: Shape | None = None
    input_shapes: dict[str, InputProfile] = field(default_factory=dict)
    precision: PrecisionMode | None = None
    dla_core: int | None = None
    verify: str = "io"
    accuracy: AccuracyConfig | None = None
    keep_fp32: tuple[str, ...] = KEEP_FP32_DEFAULT

    @classmethod
    def from_config(cls, backbone: BackboneConfig, verify: str = "io",
                    accuracy: AccuracyConfig | None = None) -> BackboneSpec:
        b = backbone
        shapes = {
            name: InputProfile.fixed(tuple(s)) if isinstance(s, list)
            else InputProfile(tuple(s.min), tuple(s.opt), tuple(s.max))
            for name, s in (b.input_shapes or {}).items()
        }
        fixed = tuple(b.expected_input_shape) if b.expected_input_shape else None
        verify = b.verify or verify
        gate = AccuracyConfig.merged(accuracy, b.accuracy) if verify == "accuracy" else None
        keep = KEEP_FP32_DEFAULT if b.keep_fp32 is None else tuple(b.keep_fp32)
        return cls(b.model_name, b.onnx_path, fixed, shapes, b.precision, b.dla_core, verify,
                   gate, keep)

    def shapes(self) -> dict[str | None, InputProfile]:
        """The configured profiles, ``None`` keying the single-input shorthand."""
        shapes: dict[str | None, InputProfile] = {k: v for k, v in self.input_shapes.items()}
        if self.expected_input_shape is not None:
            shapes[None] = InputProfile.fixed(tuple(self.expected_input_shape))
        return shapes


@dataclass(frozen=True)
class EngineCompileRequest:
    """A whole corpus to make ready on one host."""

    backbones: tuple[BackboneSpec, ...]
    calibration_path: Path | None
    cache_root: Path
    precision: PrecisionMode
    host: HostCapabilities
    workspace_mb: int = 4096
    optimization_level: int = 3
    lock_timeout_s: float = 600.0
    strict_onnx_hash: bool = False
    governor: GovernorConfig | None = None  # None: builds start without the governor
    fleet_public_key: Path | None = None  # None (or no fleet_candidates): nothing is promoted
    fleet_trusted_root: Path | None = None
    fleet_repository: str | None = None
    fleet_candidates: Path | None = None

    @classmethod
    def from_config(cls, config: EngineInitConfig, host: HostCapabilities) -> EngineCompileRequest:
        return cls(
            backbones=tuple(BackboneSpec.from_config(b, config.verify, config.accuracy)
                            for b in config.backbones),
            calibration_path=config.calibration_path, cache_root=config.cache_root,
            precision=config.precision, host=host, workspace_mb=config.workspace_mb,
            optimization_level=config.optimization_level, lock_timeout_s=config.lock_timeout_s,
            strict_onnx_hash=config.strict_onnx_hash,
            governor=config.governor if config.governor.enabled else None,
            fleet_public_key=config.fleet.public_key_file,
            fleet_trusted_root=config.fleet.trusted_root_file,
            fleet_repository=config.fleet.repository,
            fleet_candidates=config.candidates_root,
        )
