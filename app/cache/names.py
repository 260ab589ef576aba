"""Every name under the cache root, in one place (the modules that read or write them take
their names from here), and artifact file names, parsed back strictly: ``parse`` accepts
exactly what ``build`` can produce and raises ValueError otherwise.

::

    <cache_root>/
    ├── <model>__sm87_jp6.2_trt10.3_fp16.engine    an engine (EngineFilenameSchema; jpnone on x86,
    │                                              jpl4t36.9.0 for an L4T release not in our table)
    ├── <model>__ort1.20_x86_64-3fa4c2d1_fp32.ort  an ONNX Runtime model (OrtFilenameSchema): tied
    │                                              to the ONNX Runtime release and the CPU, not a GPU
    ├── <artifact>.sha256                          its sha256 sidecar (app.cache.hashing)
    ├── <artifact>.record.json                     its provenance record (app.cache.record)
    ├── .<name>.tmp-<pid>-<random>                 being published (app.cache.publish)
    ├── .engine-init.lock                          the cache lock (app.cache.lock)
    ├── .engine-init.warm.json                     the hint: engines to hash early (app.cache.hashing)
    ├── .engine-init.robot-key                     the key records are signed with (app.cache.signing)
    ├── timing/                                    TensorRT timing caches (app.backends.tensorrt.caches)
    ├── calibration/                               INT8 calibration caches (same)
    └── candidates/                                fleet.candidates_dir's default (app.fleet.candidates)
        ├── .<sku>.lock                            one import or pull of a SKU at a time
        ├── <sku>/                                 a verified bundle's files
        └── tuf/                                   this robot's trusted TUF metadata (app.fleet.tuf_client)

The readiness marker and the calibration batches (:func:`calibration_files`) live where the
config says, not under the cache root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.values import NO_JETPACK, PrecisionMode

SIDECAR_SUFFIX = ".sha256"
RECORD_SUFFIX = ".record.json"
LOCK_NAME = ".engine-init.lock"
HINT_NAME = ".engine-init.warm.json"
ROBOT_KEY_NAME = ".engine-init.robot-key"
TIMING_FOLDER = "timing"
CALIBRATION_FOLDER = "calibration"
#: The subfolders of caches a bundle carries beside the engines.
CACHE_SUBFOLDERS = (TIMING_FOLDER, CALIBRATION_FOLDER)
CANDIDATES_FOLDER = "candidates"
#: Under the candidates root, beside the SKUs' folders.
TUF_FOLDER = "tuf"


def timing_folder(cache_root: Path) -> Path:
    return Path(cache_root) / TIMING_FOLDER


def calibration_folder(cache_root: Path) -> Path:
    return Path(cache_root) / CALIBRATION_FOLDER


def default_candidates_root(cache_root: Path) -> Path:
    return Path(cache_root) / CANDIDATES_FOLDER


#: An artifact's companions, published after it: its sha256 sidecar, then its provenance record.
COMPANION_SUFFIXES = (SIDECAR_SUFFIX, RECORD_SUFFIX)

MODEL_NAME_MAX = 100
_MODEL_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_VERSION2 = r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
_VERSION3 = rf"{_VERSION2}(?:\.(?:0|[1-9]\d*))?"
_JETPACK = rf"(?:{_VERSION3}|{NO_JETPACK}|l4t{_VERSION3})"
_CPU = r"[a-z0-9_]+-[0-9a-f]{8}"
_PRECISION = "|".join(p.value for p in PrecisionMode)
_ENGINE_RE = re.compile(
    rf"(?P<model_name>.+?)__sm(?P<sm>[1-9]\d*)_jp(?P<jetpack>{_JETPACK})"
    rf"_trt(?P<trt>{_VERSION2})_(?P<precision>{_PRECISION})\.engine"
)
_ORT_RE = re.compile(
    rf"(?P<model_name>.+?)__ort(?P<ort>{_VERSION2})_(?P<cpu>{_CPU})"
    rf"_(?P<precision>{_PRECISION})\.ort"
)


def check_model_name(name: str) -> str:
    """``name`` if it is a safe file-name part, else ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError("model name must be a non-empty string")
    if len(name) > MODEL_NAME_MAX:
        raise ValueError(f"model name is {len(name)} characters; at most {MODEL_NAME_MAX}")
    if name.startswith("."):
        raise ValueError(f"model name {name!r} starts with a dot (hidden file)")
    if "__" in name:
        raise ValueError(f"model name {name!r} contains '__', the separator of file names")
    if not _MODEL_RE.fullmatch(name):
        raise ValueError(
            f"model name {name!r} may hold only letters, digits, '_', '-' and '.'"
        )
    return name


def _parts(pattern: re.Pattern[str], name: str, what: str) -> dict[str, Any]:
    match = pattern.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"not {what}: {name!r}")
    check_model_name(match["model_name"])
    return {**match.groupdict(), "precision": PrecisionMode(match["precision"])}


def _check_version2(value: str, what: str) -> str:
    if not re.fullmatch(_VERSION2, value):
        raise ValueError(f"{what} must be 'major.minor' (e.g. 10.3), got {value!r}")
    return value


@dataclass(frozen=True)
class EngineFilenameSchema:
    """Builds and parses engine file names; an instance is a parsed one."""

    model_name: str
    sm: int
    jetpack: str
    trt: str
    precision: PrecisionMode
    suffix = ".engine"

    @staticmethod
    def build(
        *, model_name: str, sm: int, jetpack: str, trt: str, precision: PrecisionMode | str
    ) -> str:
        check_model_name(model_name)
        if isinstance(sm, bool) or not isinstance(sm, int) or sm <= 0:
            raise ValueError(f"sm must be a positive integer compute capability, got {sm!r}")
        if not re.fullmatch(_JETPACK, jetpack):
            raise ValueError(
                f"jetpack must be like '6.2', {NO_JETPACK!r} or 'l4t36.4.3', got {jetpack!r}"
            )
        _check_version2(trt, "trt")
        prec = PrecisionMode(precision)
        return f"{model_name}__sm{sm}_jp{jetpack}_trt{trt}_{prec.value}.engine"

    @staticmethod
    def parse(name: str) -> EngineFilenameSchema:
        parts = _parts(_ENGINE_RE, name, "an engine file name")
        return EngineFilenameSchema(**{**parts, "sm": int(parts["sm"])})


@dataclass(frozen=True)
class OrtFilenameSchema:
    """Builds and parses ONNX Runtime model file names; an instance is a parsed one."""

    model_name: str
    ort: str
    cpu: str
    precision: PrecisionMode
    suffix = ".ort"

    @staticmethod
    def build(*, model_name: str, ort: str, cpu: str, precision: PrecisionMode | str) -> str:
        check_model_name(model_name)
        _check_version2(ort, "ort")
        if not re.fullmatch(_CPU, cpu):
            raise ValueError(f"cpu token must be '<arch>-<8 hex>', got {cpu!r}")
        prec = PrecisionMode(precision)
        return f"{model_name}__ort{ort}_{cpu}_{prec.value}.ort"

    @staticmethod
    def parse(name: str) -> OrtFilenameSchema:
        return OrtFilenameSchema(**_parts(_ORT_RE, name, "an ONNX Runtime model file name"))


def companion(artifact: Path, suffix: str) -> Path:
    return artifact.with_name(artifact.name + suffix)


def calibration_files(folder: Path | None) -> list[Path]:
    """The ``.npz``/``.npy`` files of ``folder``, in name order: what calibration is fed, what
    is fingerprinted and what the config requires."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".npz", ".npy"} and p.is_file())
