"""The job's configuration models (pydantic): what each key means and what it accepts.

Loading (YAML file, environment overrides, error lines) is :mod:`app.config_file`'s job.
Relative paths resolve against the config file's folder, passed as validation context.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

# pydantic looks for observability plugins among every installed package's entry points the
# first time a model is built (tens of ms on a boot); engine-init uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.cache.names import check_model_name
from app.cache.record import calibration_files
from app.types import (
    BackboneSpec,
    EngineCompileRequest,
    HostCapabilities,
    InputProfile,
    PrecisionMode,
)

__all__ = ["DEFAULT_CONFIG_PATH", "BackboneConfig", "EngineInitConfig", "ProfileConfig"]

DEFAULT_CONFIG_PATH = Path("/etc/engine-init/config.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileConfig(_Strict):
    """A dynamic input's range: TensorRT builds for ``opt`` and accepts ``min``..``max``."""

    min: list[PositiveInt]
    opt: list[PositiveInt]
    max: list[PositiveInt]

    @model_validator(mode="after")
    def _ordered(self) -> ProfileConfig:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError("min, opt and max must have the same number of dimensions")
        for i, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if not lo <= mid <= hi:
                raise ValueError(f"dimension {i}: need min <= opt <= max, got {lo}, {mid}, {hi}")
        return self


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(str(value)))
    # normpath, not resolve: keep the user's symlinks, drop the '..' noise.
    return path if path.is_absolute() or base is None else Path(os.path.normpath(Path(base) / path))


class BackboneConfig(_Strict):
    model_name: str
    onnx_path: Path
    expected_input_shape: list[PositiveInt] | None = Field(default=None, min_length=1)
    input_shapes: dict[str, list[PositiveInt] | ProfileConfig] | None = None
    precision: PrecisionMode | None = None
    dla_core: int | None = Field(default=None, ge=0)
    verify: Literal["io", "infer", "none"] = "io"

    @field_validator("model_name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("onnx_path")
    @classmethod
    def _onnx_exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        assert path is not None
        if not (info.context or {}).get("check_files", True):
            return path
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @model_validator(mode="after")
    def _one_shape_form(self) -> BackboneConfig:
        if self.expected_input_shape is not None and self.input_shapes is not None:
            raise ValueError("give expected_input_shape or input_shapes, not both")
        for name, shape in (self.input_shapes or {}).items():
            if isinstance(shape, list) and not shape:
                raise ValueError(f"input_shapes.{name}: needs at least one dimension")
        return self

    def to_spec(self) -> BackboneSpec:
        shapes = {
            name: InputProfile.fixed(tuple(s)) if isinstance(s, list)
            else InputProfile(tuple(s.min), tuple(s.opt), tuple(s.max))
            for name, s in (self.input_shapes or {}).items()
        }
        fixed = tuple(self.expected_input_shape) if self.expected_input_shape else None
        return BackboneSpec(self.model_name, self.onnx_path, fixed, shapes, self.precision,
                            self.dla_core, self.verify)


class EngineInitConfig(_Strict):
    """The whole job's settings; ``engine-init schema`` prints them as JSON Schema."""

    cache_root: Path = Path("/var/cache/engine-init")
    readiness_marker: Path = Path("/run/engine-init/ready.json")
    backend: Literal["auto", "tensorrt", "onnxruntime"] = "auto"
    precision: PrecisionMode = PrecisionMode.FP16
    workspace_mb: PositiveInt = 4096
    optimization_level: int = Field(default=3, ge=0, le=5)
    calibration_path: Path | None = None
    cuda_device: int = Field(default=0, ge=0)
    jetpack: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    lock_timeout_s: float = Field(default=600.0, gt=0)
    strict_onnx_hash: bool = False
    signing_key_file: Path | None = None
    allow_world_writable_cache: bool = False
    backbones: list[BackboneConfig] = Field(min_length=1)

    resolve_relative_paths = field_validator(
        "cache_root", "readiness_marker", "calibration_path", "signing_key_file"
    )(_resolve)

    @model_validator(mode="after")
    def _corpus_rules(self, info: ValidationInfo) -> EngineInitConfig:
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
                    f"{self.cache_root / 'calibration'}"
                )
        return self

    def _has_calibration(self, b: BackboneConfig) -> bool:
        if self.calibration_path is not None and calibration_files(self.calibration_path / b.model_name):
            return True
        cache_dir = self.cache_root / "calibration"
        return cache_dir.is_dir() and any(cache_dir.glob(f"{b.model_name}__*.calib"))

    def to_request(self, host: HostCapabilities) -> EngineCompileRequest:
        return EngineCompileRequest(
            backbones=tuple(b.to_spec() for b in self.backbones),
            calibration_path=self.calibration_path, cache_root=self.cache_root,
            precision=self.precision, host=host, workspace_mb=self.workspace_mb,
            optimization_level=self.optimization_level, lock_timeout_s=self.lock_timeout_s,
            strict_onnx_hash=self.strict_onnx_hash,
        )

