"""The job's configuration: what each key means and what it accepts.

Each key is declared once, as a field of a frozen dataclass that carries its type (for the code),
its default and its pydantic-core schema (for the input). The validator is pydantic's own Rust
core, so errors have pydantic's locations and wording; pydantic's ``BaseModel`` layer is not
used because importing it costs about 70 ms, more than a warm boot may spend outside hashing.
``engine-init schema`` turns the same core schema into JSON Schema with pydantic.

Loading (YAML file, environment overrides, error lines) is :mod:`app.config_file`'s job.
Relative paths resolve against the config file's folder, passed as validation context.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from app.backends.registry import BACKEND_NAMES
from app.cache.names import calibration_files, check_model_name
from app.config_file import DEFAULT_CACHE_ROOT, DEFAULT_MARKER
from app.types import PrecisionMode

if TYPE_CHECKING:
    from app.types import BackboneSpec, EngineCompileRequest, HostCapabilities

__all__ = ["BackboneConfig", "EngineInitConfig", "ProfileConfig",
           "config_keys", "json_schema", "validate_config"]



def _key(schema: cs.CoreSchema, default: Any = dataclasses.MISSING) -> Any:
    """A config key: its pydantic-core schema, and its default when it is optional."""
    return dataclasses.field(default=default, metadata={"schema": schema})


def _resolve(value: str, info: cs.ValidationInfo) -> Path:
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(value))
    # normpath, not resolve: keep the user's symlinks, drop the '..' noise.
    return path if path.is_absolute() or base is None else Path(os.path.normpath(Path(base) / path))


def _existing_file(value: str, info: cs.ValidationInfo) -> Path:
    path = _resolve(value, info)
    if (info.context or {}).get("check_files", True):
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
    return path


_PATH = cs.with_info_after_validator_function(_resolve, cs.str_schema())
_DIMS = cs.list_schema(cs.int_schema(gt=0))
_PRECISION = cs.enum_schema(PrecisionMode, list(PrecisionMode), sub_type="str")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    """A dynamic input's range: TensorRT builds for ``opt`` and accepts ``min``..``max``."""

    min: list[int] = _key(_DIMS)
    opt: list[int] = _key(_DIMS)
    max: list[int] = _key(_DIMS)

    def _check(self, info: cs.ValidationInfo) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError("min, opt and max must have the same number of dimensions")
        for i, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if not lo <= mid <= hi:
                raise ValueError(f"dimension {i}: need min <= opt <= max, got {lo}, {mid}, {hi}")


def _shape_form(value: Any) -> str | None:
    return "range" if isinstance(value, dict) else "dims" if isinstance(value, list) else None


def _record_schema(cls: type[Any]) -> cs.CoreSchema:
    """A mapping with exactly ``cls``'s keys, turned into ``cls`` and checked by its ``_check``."""
    fields = {}
    for f in dataclasses.fields(cls):
        schema: cs.CoreSchema = f.metadata["schema"]
        optional = f.default is not dataclasses.MISSING
        if optional:
            schema = cs.with_default_schema(schema, default=f.default)
        fields[f.name] = cs.typed_dict_field(schema, required=not optional)

    def build(values: dict[str, Any], info: cs.ValidationInfo) -> Any:
        record = cls(**values)
        record._check(info)
        return record

    mapping = cs.typed_dict_schema(fields, extra_behavior="forbid", config={"title": cls.__name__})
    return cs.with_info_after_validator_function(build, mapping)


# A fixed shape is a list, a dynamic one a mapping: the form picks the schema, so an error
# speaks of the form the user wrote (and the location says which: ``.dims`` or ``.range``).
_SHAPE = cs.tagged_union_schema(
    {"dims": _DIMS, "range": _record_schema(ProfileConfig)}, _shape_form,
    custom_error_type="shape_form",
    custom_error_message="Input should be a list of dimensions or a mapping of min, opt and max")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """One model: its ONNX file, input shapes and what may differ from the job's settings."""

    model_name: str = _key(cs.no_info_after_validator_function(check_model_name, cs.str_schema()))
    onnx_path: Path = _key(cs.with_info_after_validator_function(_existing_file, cs.str_schema()))
    expected_input_shape: list[int] | None = _key(
        cs.nullable_schema(cs.list_schema(cs.int_schema(gt=0), min_length=1)), None)
    input_shapes: dict[str, list[int] | ProfileConfig] | None = _key(cs.nullable_schema(
        cs.dict_schema(cs.str_schema(), _SHAPE)), None)
    precision: PrecisionMode | None = _key(cs.nullable_schema(_PRECISION), None)
    dla_core: int | None = _key(cs.nullable_schema(cs.int_schema(ge=0)), None)
    verify: Literal["io", "infer", "none"] = _key(cs.literal_schema(["io", "infer", "none"]), "io")

    def _check(self, info: cs.ValidationInfo) -> None:
        if self.expected_input_shape is not None and self.input_shapes is not None:
            raise ValueError("give expected_input_shape or input_shapes, not both")
        for name, shape in (self.input_shapes or {}).items():
            if isinstance(shape, list) and not shape:
                raise ValueError(f"input_shapes.{name}: needs at least one dimension")

    def to_spec(self) -> BackboneSpec:
        from app.types import BackboneSpec, InputProfile

        shapes = {
            name: InputProfile.fixed(tuple(s)) if isinstance(s, list)
            else InputProfile(tuple(s.min), tuple(s.opt), tuple(s.max))
            for name, s in (self.input_shapes or {}).items()
        }
        fixed = tuple(self.expected_input_shape) if self.expected_input_shape else None
        return BackboneSpec(self.model_name, self.onnx_path, fixed, shapes, self.precision,
                            self.dla_core, self.verify)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineInitConfig:
    """The whole job's settings; ``engine-init schema`` prints them as JSON Schema."""

    cache_root: Path = _key(_PATH, DEFAULT_CACHE_ROOT)
    readiness_marker: Path = _key(_PATH, DEFAULT_MARKER)
    backend: Literal["auto", "tensorrt", "onnxruntime"] = _key(
        cs.literal_schema(list(BACKEND_NAMES)), "auto")
    precision: PrecisionMode = _key(_PRECISION, PrecisionMode.FP16)
    workspace_mb: int = _key(cs.int_schema(gt=0), 4096)
    optimization_level: int = _key(cs.int_schema(ge=0, le=5), 3)
    calibration_path: Path | None = _key(cs.nullable_schema(_PATH), None)
    cuda_device: int = _key(cs.int_schema(ge=0), 0)
    jetpack: str | None = _key(cs.nullable_schema(cs.str_schema(pattern=r"^\d+\.\d+(\.\d+)?$")), None)
    lock_timeout_s: float = _key(cs.float_schema(gt=0), 600.0)
    strict_onnx_hash: bool = _key(cs.bool_schema(), False)
    signing_key_file: Path | None = _key(cs.nullable_schema(_PATH), None)
    allow_world_writable_cache: bool = _key(cs.bool_schema(), False)
    # A Prometheus textfile written at the end of every run (app.metrics); node_exporter's
    # textfile collector reads only *.prom files.
    metrics_textfile: Path | None = _key(cs.nullable_schema(cs.with_info_after_validator_function(
        _resolve, cs.str_schema(pattern=r"\.prom$"))), None)
    backbones: list[BackboneConfig] = _key(
        cs.list_schema(_record_schema(BackboneConfig), min_length=1))

    def _check(self, info: cs.ValidationInfo) -> None:
        seen: set[str] = set()
        for b in self.backbones:
            if b.model_name in seen:
                raise ValueError(f"backbones: duplicate model_name {b.model_name!r}")
            seen.add(b.model_name)
        if not (info.context or {}).get("check_files", True):
            return
        for b in self.backbones:
            if (b.precision or self.precision) is PrecisionMode.INT8 and not self._has_calibration(b):
                raise ValueError(
                    f"backbones[{b.model_name}]: int8 needs calibration data in "
                    f"calibration_path/{b.model_name}/ (.npz or .npy) or a calibration cache in "
                    f"{self.cache_root / 'calibration'}"
                )

    def _has_calibration(self, b: BackboneConfig) -> bool:
        if self.calibration_path is not None and calibration_files(self.calibration_path / b.model_name):
            return True
        cache_dir = self.cache_root / "calibration"
        return cache_dir.is_dir() and any(cache_dir.glob(f"{b.model_name}__*.calib"))

    def to_request(self, host: HostCapabilities) -> EngineCompileRequest:
        from app.types import EngineCompileRequest

        return EngineCompileRequest(
            backbones=tuple(b.to_spec() for b in self.backbones),
            calibration_path=self.calibration_path, cache_root=self.cache_root,
            precision=self.precision, host=host, workspace_mb=self.workspace_mb,
            optimization_level=self.optimization_level, lock_timeout_s=self.lock_timeout_s,
            strict_onnx_hash=self.strict_onnx_hash,
        )


_SCHEMA = _record_schema(EngineInitConfig)
_VALIDATOR = SchemaValidator(_SCHEMA)


def validate_config(doc: object, context: dict[str, Any]) -> EngineInitConfig:
    """``doc`` (parsed YAML) as a config; raises :class:`pydantic_core.ValidationError`."""
    config = _VALIDATOR.validate_python(doc, context=context)
    assert isinstance(config, EngineInitConfig)
    return config


def config_keys() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(EngineInitConfig))


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema, generated by pydantic from the schema that validates it."""
    from pydantic.json_schema import GenerateJsonSchema

    return GenerateJsonSchema().generate(_SCHEMA)
