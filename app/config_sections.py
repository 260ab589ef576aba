"""The config's path types and the sections each feature owns (``accuracy``, ``governor``,
``fleet``), which :mod:`app.config` assembles; the code uses them as they are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_core import core_schema as cs
from typing_extensions import Self

# The accuracy gate's random inputs by default (a normalized image's range).
DEFAULT_COUNT = 4
DEFAULT_SEED = 0
DEFAULT_RANGE = (0.0, 1.0)
MISSING_FILE = "missing_file"


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
            base = (info.context or {}).get("base_dir")
            relative = "" if base is None or Path(os.path.expanduser(value)).is_absolute() else (
                f" (relative paths resolve against the config file's folder, {base})")
            # Its own error type: the loader's hint for it is to fix the path.
            raise PydanticCustomError(MISSING_FILE, "{path} does not exist{relative}",
                                      {"path": str(path), "relative": relative})
        if not path.is_file():
            raise PydanticCustomError(MISSING_FILE, "{path} is not a file", {"path": str(path)})
    return path


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _path_schema(check: Any, text: cs.CoreSchema | None = None) -> Any:
    # A string (a wrong type says "a valid string"), or a Path from Python.
    return GetPydanticSchema(lambda _type, _handler: cs.no_info_before_validator_function(
        _as_text, cs.with_info_after_validator_function(check, text or cs.str_schema())))


_PATH_JSON = WithJsonSchema({"type": "string", "format": "path"})
ConfigPath = Annotated[Path, _path_schema(_resolve), _PATH_JSON]
ExistingFile = Annotated[Path, _path_schema(_existing_file), _PATH_JSON]
PromPath = Annotated[Path, _path_schema(_resolve, cs.str_schema(pattern=r"\.prom$")), _PATH_JSON]


# Unknown keys (typos) are errors, a loaded config is frozen, no .inf/.nan: docs/hardening.md.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Also the rules app.verify.rules finds in the ONNX graph (with the reason it found them for).
class AccuracyOutputConfig(BaseModel):
    """How one output is compared (docs/accuracy-gate.md): over what the ONNX graph shows."""

    model_config = STRICT
    compare: Literal["values", "points", "argmax", "skip"] | None = Field(
        None, description="values: elementwise metrics; points: rows [..., N, D] as a set, "
                          "matched within `radius`; argmax: agreement of the argmax along "
                          "`axis`; skip: not compared (give `reason`). With `aligned_to`: "
                          "values (the default).")
    radius: float | None = Field(
        None, ge=0, description="points: the match radius in the output's units; null: half "
                                "the median spacing of the reference's rows (0 for integers).")
    aligned_to: str | None = Field(
        None, min_length=1, description="A points output whose matching reorders this "
                                        "output's rows before they are compared as values.")
    axis: int = Field(-1, description="argmax: the axis the argmax is taken along.")
    reason: str | None = Field(None, min_length=1, description="skip: why (said in the event).")
    metric: Literal["rel_l2", "cosine", "max_abs", "atol", "matched", "agreement", "variation",
                    "neighbours"] | None = Field(
        None, description="A bound replaced for this output only; give `threshold` with it.")
    threshold: float | None = Field(None, ge=0, description="The bound for `metric`.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("give metric and threshold together")
        if self.aligned_to is not None and self.compare not in (None, "values"):
            raise ValueError(f"aligned_to compares rows as values, not {self.compare}")
        if self.compare == "skip" and not self.reason:
            raise ValueError("compare: skip needs a reason (it is said in the event)")
        if self.radius is not None and self.compare != "points":
            raise ValueError("radius applies to compare: points")
        return self

    @property
    def comparison(self) -> str:
        """What the gate does: ``compare``; ``aligned`` with ``aligned_to``; else ``values``."""
        return "aligned" if self.aligned_to else (self.compare or "values")

    def key(self) -> dict[str, Any]:
        """What a recorded pass must match (not the reason: words, not a setting)."""
        return {"compare": self.comparison, "radius": self.radius, "aligned_to": self.aligned_to,
                "axis": self.axis, "metric": self.metric, "threshold": self.threshold}


class AccuracyConfig(BaseModel):
    """The accuracy gate's settings (``verify: accuracy``); defaults: the precision's
    tolerance (docs/accuracy-gate.md) on seeded random inputs at each input's opt shape."""

    model_config = STRICT
    metric: Literal["rel_l2", "cosine", "max_abs", "atol"] | None = Field(
        None, description="The metric whose bound `threshold` replaces in the precision's "
                          "default tolerance; give both or neither.")
    threshold: float | None = Field(
        None, ge=0, le=1e9, description="The bound for `metric` (an upper bound, a lower one "
                                        "for cosine), 0..1e9.")
    samples_path: ConfigPath | None = Field(
        None, description="Folder of sample inputs (.npz/.npy, one batch a file, like calibration "
                          "batches; never the calibration folder itself); null: random inputs.")
    random_samples: int = Field(
        DEFAULT_COUNT, ge=1, le=1000, description="How many seeded random inputs, without "
                                                  "samples_path.")
    seed: int = Field(DEFAULT_SEED, ge=0, le=2**32 - 1,
                      description="Seed of the random inputs, 0..4294967295.")
    value_range: Annotated[list[Annotated[float, Field(ge=-1e30, le=1e30)]],
                           Field(min_length=2, max_length=2)] = Field(
        list(DEFAULT_RANGE), description="[low, high] of the random float inputs, each "
                                         "within -1e30..1e30.")
    outputs: dict[str, AccuracyOutputConfig] = Field(
        {}, description="Per output name, how it is compared; outputs not named are compared "
                        "as the ONNX graph shows (sets and argmax found by reading it), else "
                        "as values. In a model's accuracy, every name must be one of its "
                        "outputs; in the top-level accuracy, a name applies to the models "
                        "that have such an output.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.metric is None) != (self.threshold is None):
            raise ValueError("give metric and threshold together")
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError("value_range: need low < high")
        return self

    # Names in ``outputs`` from the job-wide section: they apply only where the model has them.
    _shared_outputs: frozenset[str] = PrivateAttr(frozenset())

    @property
    def shared_outputs(self) -> frozenset[str]:
        return self._shared_outputs

    @classmethod
    def merged(cls, job: AccuracyConfig | None, model: AccuracyConfig | None) -> AccuracyConfig:
        """One model's settings: its keys over the job's over the defaults."""
        keys = {**(job.model_dump(exclude_unset=True) if job else {}),
                **(model.model_dump(exclude_unset=True) if model else {})}
        # Per output, the model's entry replaces the job's (an output's rule is one setting).
        keys["outputs"] = {**(job.outputs if job else {}), **(model.outputs if model else {})}
        merged = cls.model_construct(**keys)  # both were validated; so is their union
        merged._shared_outputs = frozenset(keys["outputs"]) - frozenset(model.outputs if model
                                                                          else ())
        return merged

    def outputs_key(self) -> dict[str, Any]:
        return {name: rule.key() for name, rule in sorted(self.outputs.items())}


class GovernorConfig(BaseModel):
    """The build governor, consulted before each build (docs/governor.md)."""

    model_config = STRICT
    enabled: bool = Field(
        True, description="false: no reading, clamp, wait or refusal before builds.")
    memory_share: float = Field(
        0.5, gt=0, le=1, description="The TensorRT workspace is clamped to this share of "
                                     "MemAvailable.")
    reserve_mb: int = Field(
        512, ge=0, le=1 << 20, description="A build needs about reserve_mb + weights_factor x "
                                           "the ONNX file's size; less memory and swap than that "
                                           "refuses it (exit 69). 0..1048576.")
    weights_factor: float = Field(
        3.0, ge=0, le=100, description="Copies of the weights a build holds (see reserve_mb), "
                                       "0..100.")
    min_workspace_mb: int = Field(
        32, ge=1, le=1 << 20, description="A clamp that leaves less workspace than this refuses "
                                          "the build (exit 69). 1..1048576.")
    max_temp_c: float = Field(
        85.0, gt=0, le=200, description="A thermal zone at or above this holds the build until "
                                        "it cools; above 0, at most 200.")
    thermal_wait_s: float = Field(
        300.0, ge=0, le=86400, description="How long a build waits for a hot zone to cool, "
                                           "0..86400 s.")
    poll_s: float = Field(5.0, gt=0, le=3600, description="How often the zones are read while "
                                                          "waiting; above 0, at most 3600 s.")
    when_hot: Literal["proceed", "refuse"] = Field(
        "proceed", description="After thermal_wait_s: proceed (with a warning) or refuse "
                               "(exit 69).")
    ignore_zones: list[str] = Field(
        ["PMIC-Die"], description="Thermal zone types (fnmatch patterns) shown but never "
                                  "decided on.")
    root: ConfigPath = Field(
        Path("/"), description="Where /proc/meminfo, /sys/class/thermal and nvpmodel's files "
                               "are read (a fake tree in tests).")


class FleetConfig(BaseModel):
    """Defaults of the fleet commands (export, import, push, pull); their options override."""

    model_config = STRICT
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
    trusted_root_file: ConfigPath | None = Field(
        default=None, description="The fleet's first TUF root metadata (1.root.json, written by "
                          "`engine-init fleet trust init`), provisioned with the robot: pull then "
                          "takes only what the fleet released (rollback, expiry, key rotation "
                          "checked), and run promotes only released candidates (docs/fleet-trust.md).")
    candidates_dir: ConfigPath | None = Field(
        default=None, description="Folder where pull and import store verified bundles as "
                          "candidates, and the only one they write; run reads it as untrusted "
                          "input and copies what it promotes into cache_root. null: "
                          "<cache_root>/candidates (the shipped compose file, units and manifests "
                          "mount it there as a volume of its own).")
    blob_grace_s: float = Field(
        default=30.0, gt=0, le=86400, description="Seconds any registry request or blob may take whatever "
                          "its size, and the longest silence of the registry: beyond it pull "
                          "gives up (exit 69).")
    min_rate_kib_s: float = Field(
        default=256.0, gt=0, le=10_000_000, description="Beyond blob_grace_s, each blob must arrive at this "
                          "average rate (KiB/s): a blob of N KiB gets blob_grace_s + N / "
                          "min_rate_kib_s seconds, then pull gives up (exit 69) with the lock "
                          "released and nothing stored.")
