"""Artifact file names: readable, hardware-tied, and parsed back strictly.

TensorRT engines (:class:`EngineFilenameSchema`)::

    <model>__sm<cc>_jp<jetpack>_trt<major.minor>_<precision>.engine
    dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine     Orin, JetPack 6.2, TensorRT 10.3
    dinov2_vpr__sm90_jpnone_trt10.3_fp16.engine    x86 dGPU: no JetPack
    dinov2_vpr__sm87_jpl4t36.9.0_trt10.3_fp16.engine   an L4T release not in our table

ONNX Runtime models (:class:`OrtFilenameSchema`) are tied to the ONNX Runtime release and the
CPU they were optimized for, not to a GPU::

    <model>__ort<major.minor>_<arch>-<cpu8>_<precision>.ort
    dinov2_vpr__ort1.20_x86_64-3fa4c2d1_fp32.ort

``parse`` accepts exactly what ``build`` can produce and raises :class:`ValueError` otherwise.
Calibration batches are the ``.npz``/``.npy`` files of a model's folder (:func:`calibration_files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.cache.layout import RECORD_SUFFIX, SIDECAR_SUFFIX
from app.values import NO_JETPACK, PrecisionMode

#: An artifact's companions, published after it: its sha256 sidecar, then its provenance record.
COMPANION_SUFFIXES = (SIDECAR_SUFFIX, RECORD_SUFFIX)

MODEL_NAME_MAX = 100
_MODEL_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_VERSION2 = r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
_JETPACK = rf"(?:{_VERSION2}(?:\.(?:0|[1-9]\d*))?|{NO_JETPACK}|l4t{_VERSION2}(?:\.(?:0|[1-9]\d*))?)"
_PRECISION = "|".join(p.value for p in PrecisionMode)
_ENGINE_RE = re.compile(
    rf"(?P<model>.+?)__sm(?P<sm>[1-9]\d*)_jp(?P<jp>{_JETPACK})"
    rf"_trt(?P<trt>{_VERSION2})_(?P<precision>{_PRECISION})\.engine"
)
_ORT_RE = re.compile(
    rf"(?P<model>.+?)__ort(?P<ort>{_VERSION2})_(?P<cpu>[a-z0-9_]+-[0-9a-f]{{8}})"
    rf"_(?P<precision>{_PRECISION})\.ort"
)


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a safe file-name part, else raise ValueError saying why."""
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


def _check_version2(value: str, what: str) -> str:
    if not re.fullmatch(_VERSION2, value):
        raise ValueError(f"{what} must be 'major.minor' (e.g. 10.3), got {value!r}")
    return value


@dataclass(frozen=True)
class ParsedEngineName:
    """The parts of a TensorRT engine's file name."""

    model_name: str
    sm: int
    jetpack: str
    trt: str
    precision: PrecisionMode


@dataclass(frozen=True)
class ParsedOrtName:
    """The parts of an ONNX Runtime model's file name."""

    model_name: str
    ort: str
    cpu: str
    precision: PrecisionMode


class EngineFilenameSchema:
    """Names of TensorRT engines; see the module docstring."""

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
    def parse(name: str) -> ParsedEngineName:
        match = _ENGINE_RE.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(f"not an engine file name: {name!r}")
        check_model_name(match["model"])
        return ParsedEngineName(
            model_name=match["model"],
            sm=int(match["sm"]),
            jetpack=match["jp"],
            trt=match["trt"],
            precision=PrecisionMode(match["precision"]),
        )


class OrtFilenameSchema:
    """Names of ONNX Runtime optimized models; see the module docstring."""

    suffix = ".ort"

    @staticmethod
    def build(*, model_name: str, ort: str, cpu: str, precision: PrecisionMode | str) -> str:
        check_model_name(model_name)
        _check_version2(ort, "ort")
        if not re.fullmatch(r"[a-z0-9_]+-[0-9a-f]{8}", cpu):
            raise ValueError(f"cpu token must be '<arch>-<8 hex>', got {cpu!r}")
        prec = PrecisionMode(precision)
        return f"{model_name}__ort{ort}_{cpu}_{prec.value}.ort"

    @staticmethod
    def parse(name: str) -> ParsedOrtName:
        match = _ORT_RE.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(f"not an ONNX Runtime model file name: {name!r}")
        check_model_name(match["model"])
        return ParsedOrtName(
            model_name=match["model"],
            ort=match["ort"],
            cpu=match["cpu"],
            precision=PrecisionMode(match["precision"]),
        )


def companion(artifact: Path, suffix: str) -> Path:
    """``<artifact><suffix>``, beside it: one of :data:`COMPANION_SUFFIXES`."""
    return artifact.with_name(artifact.name + suffix)


def calibration_files(folder: Path | None) -> list[Path]:
    """A model's calibration batches: the ``.npz``/``.npy`` files of its folder, in name order.
    The one definition of what is fed to calibration, fingerprinted, and required by the config."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".npz", ".npy"} and p.is_file())
