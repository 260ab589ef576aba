"""The config's path types and the sections each feature owns: ``accuracy`` (the accuracy
gate), ``governor`` (the build governor) and ``fleet`` (the fleet commands' defaults).

:mod:`app.config` assembles them with the models into the job's document; the rules there
hold here too (relative paths against the config's folder, ``check_files`` in the context).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, GetPydanticSchema, ValidationInfo, WithJsonSchema, model_validator
from pydantic_core import core_schema as cs
from typing_extensions import Self

from app.verify.inputs import DEFAULT_COUNT, DEFAULT_RANGE, DEFAULT_SEED

if TYPE_CHECKING:
    from app.governor.admission import GovernorSettings
    from app.verify.accuracy import AccuracySettings

__all__ = ["AccuracyConfig", "ConfigPath", "ExistingFile", "FleetConfig", "GovernorConfig",
           "PromPath", "StrictModel"]


def _resolve(value: str, info: ValidationInfo) -> Path:
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(value))
    # normpath, not resolve: keep the user's symlinks, drop the '..' noise.
    return path if path.is_absolute() or base is None else Path(os.path.normpath(Path(base) / path))


def _existing_file(value: str, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if (info.context or {}).get("check_files", True):
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
    return path


def _path_type(check: Any) -> Any:
    """A path given as a YAML string (so that a wrong type says "a valid string"), turned
    into a :class:`Path` by ``check``."""
    return GetPydanticSchema(
        lambda _type, _handler: cs.with_info_after_validator_function(check, cs.str_schema()))


_PATH_JSON = WithJsonSchema({"type": "string", "format": "path"})
#: A path, relative to the config file's folder unless absolute; ``~`` expands.
ConfigPath = Annotated[Path, _path_type(_resolve), _PATH_JSON]
ExistingFile = Annotated[Path, _path_type(_existing_file), _PATH_JSON]
#: A path as :data:`ConfigPath` whose name ends in ``.prom`` (node_exporter reads only those).
PromPath = Annotated[Path, GetPydanticSchema(lambda _t, _h: cs.with_info_after_validator_function(
    _resolve, cs.str_schema(pattern=r"\.prom$"))), _PATH_JSON]


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not be ignored); a loaded config never changes."""

    model_config = {"extra": "forbid", "frozen": True}


class AccuracyConfig(StrictModel):
    """The accuracy gate's settings (``verify: accuracy``); defaults: the precision's
    tolerance (README, "Accuracy gate") on seeded random inputs at each input's opt shape."""

    metric: Literal["rel_l2", "cosine", "max_abs", "atol"] | None = Field(
        None, description="The metric whose bound `threshold` replaces in the precision's "
                          "default tolerance; give both or neither.")
    threshold: float | None = Field(
        None, ge=0, description="The bound for `metric` (an upper bound, a lower one for cosine).")
    samples_path: ConfigPath | None = Field(
        None, description="Folder of sample inputs (.npz/.npy, one batch a file, like calibration "
                          "batches; never the calibration folder itself); null: random inputs.")
    random_samples: int = Field(
        DEFAULT_COUNT, ge=1, le=1000, description="How many seeded random inputs, without "
                                                  "samples_path.")
    seed: int = Field(DEFAULT_SEED, ge=0, description="Seed of the random inputs.")
    value_range: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(
        list(DEFAULT_RANGE), description="[low, high] of the random float inputs.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("give metric and threshold together")
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError("value_range: need low < high")
        return self

    @classmethod
    def merged(cls, job: AccuracyConfig | None, model: AccuracyConfig | None) -> AccuracySettings:
        """The library's settings: the model's keys over the job's over the defaults."""
        from app.verify.accuracy import AccuracySettings

        keys = {**(job.model_dump(exclude_unset=True) if job else {}),
                **(model.model_dump(exclude_unset=True) if model else {})}
        doc = cls.model_construct(**keys)
        return AccuracySettings(doc.metric, doc.threshold, doc.samples_path, doc.random_samples,
                                doc.seed, (doc.value_range[0], doc.value_range[1]))


class GovernorConfig(StrictModel):
    """The build governor, consulted before each build (README, "Build governor")."""

    enabled: bool = Field(
        True, description="false: no reading, clamp, wait or refusal before builds.")
    memory_share: float = Field(
        0.5, gt=0, le=1, description="The TensorRT workspace is clamped to this share of "
                                     "MemAvailable.")
    reserve_mb: int = Field(
        512, ge=0, description="A build needs about reserve_mb + weights_factor x the ONNX "
                               "file's size; less memory and swap than that refuses it (exit 69).")
    weights_factor: float = Field(
        3.0, ge=0, description="Copies of the weights a build holds (see reserve_mb).")
    min_workspace_mb: int = Field(
        32, ge=1, description="A clamp that leaves less workspace than this refuses the build "
                              "(exit 69).")
    max_temp_c: float = Field(
        85.0, gt=0, description="A thermal zone at or above this holds the build until it cools.")
    thermal_wait_s: float = Field(
        300.0, ge=0, description="How long a build waits for a hot zone to cool.")
    poll_s: float = Field(5.0, gt=0, description="How often the zones are read while waiting.")
    when_hot: Literal["proceed", "refuse"] = Field(
        "proceed", description="After thermal_wait_s: proceed (with a warning) or refuse "
                               "(exit 69).")
    ignore_zones: list[str] = Field(
        ["PMIC-Die"], description="Thermal zone types (fnmatch patterns) shown but never "
                                  "decided on.")
    root: ConfigPath = Field(
        Path("/"), description="Where /proc/meminfo, /sys/class/thermal and nvpmodel's files "
                               "are read (a fake tree in tests).")

    def settings(self) -> GovernorSettings | None:
        from app.governor.admission import GovernorSettings

        if not self.enabled:
            return None
        return GovernorSettings(
            memory_share=self.memory_share, reserve_mb=self.reserve_mb,
            weights_factor=self.weights_factor, min_workspace_mb=self.min_workspace_mb,
            max_temp_c=self.max_temp_c, thermal_wait_s=self.thermal_wait_s, poll_s=self.poll_s,
            when_hot=self.when_hot, ignore_zones=tuple(self.ignore_zones), root=self.root)


class FleetConfig(StrictModel):
    """Defaults of the fleet commands (export, import, push, pull); their options override."""

    repository: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Registry repository of the fleet's engines, host[:port]/path "
                          "(push and pull; the tag is the SKU key). Credentials come from the "
                          "Docker config file, never from here.")
    insecure: bool = Field(
        default=False, description="Talk plain HTTP to the registry (only on a trusted network). "
                          "A registry on localhost or 127.0.0.0/8 is always plain HTTP, as Docker "
                          "treats it.")
    private_key_file: ConfigPath | None = Field(
        default=None, description="Ed25519 private key (PEM) that export and push sign bundles with; "
                          "on the build host only.")
    public_key_file: ConfigPath | None = Field(
        default=None, description="Ed25519 public key (PEM) that import and pull verify bundles with, "
                          "and that run checks candidates with again before promoting one.")
    candidates_dir: ConfigPath | None = Field(
        default=None, description="Folder where pull and import store verified bundles as "
                          "candidates, and the only one they write; run reads it as untrusted "
                          "input and copies what it promotes into cache_root. null: "
                          "<cache_root>/candidates (the shipped compose file, units and manifests "
                          "mount it there as a volume of its own).")
    blob_grace_s: float = Field(
        default=30.0, gt=0, description="Seconds any registry request or blob may take whatever "
                          "its size, and the longest silence of the registry: beyond it pull "
                          "gives up (exit 69).")
    min_rate_kib_s: float = Field(
        default=256.0, gt=0, description="Beyond blob_grace_s, each blob must arrive at this "
                          "average rate (KiB/s): a blob of N KiB gets blob_grace_s + N / "
                          "min_rate_kib_s seconds, then pull gives up (exit 69) with the lock "
                          "released and nothing stored.")
