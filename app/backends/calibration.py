"""INT8 calibration batches (and the accuracy gate's samples): ``.npz`` with one array per input,
or ``.npy`` for a single-input model, each checked against the inputs' names, dtypes and shapes
(exactly ``opt`` with ``opt_only``: TensorRT calibrates there)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from app.backends.onnx_model import ModelInterface
from app.cache.fsread import open_binary
from app.cache.names import calibration_files
from app.errors import CalibrationCacheError, ModelDataError
from app.values import InputProfile

NO_DATA_HINT = "add calibration data, or build this model in fp16/fp32"


class CalibrationSet:
    def __init__(self, folder: Path | None, model: ModelInterface,
                 profiles: dict[str, InputProfile], model_name: str, *, opt_only: bool = False,
                 what: str = "calibration") -> None:
        self.folder = folder
        self.opt_only = opt_only
        self.what = what
        self.files = calibration_files(folder)
        self.model = model
        self.profiles = profiles
        self.model_name = model_name

    def require(self) -> CalibrationSet:
        if not self.files:
            raise CalibrationCacheError(
                f"{self.model_name}: int8 needs calibration batches in {self.folder} "
                "(.npz per batch, arrays named after the inputs; .npy for single-input models)",
                hint=NO_DATA_HINT)
        return self

    def validate(self) -> CalibrationSet:
        """Check every batch from its array headers: refused before a build, not in one."""
        for path in self.files:
            self._check(path, self._read(path, headers=True))
        return self

    def batches(self) -> Iterator[dict[str, Any]]:
        for path in self.files:
            arrays = self._read(path, headers=False)
            self._check(path, {k: (a.dtype.name, tuple(a.shape)) for k, a in arrays.items()})
            yield arrays

    def _read(self, path: Path, headers: bool) -> dict[str, Any]:
        """``{array name: array}``; with ``headers``, ``{array name: (dtype name, shape)}``."""
        import numpy as np

        names = [t.name for t in self.model.inputs]
        if path.suffix == ".npy" and len(names) != 1:
            raise ModelDataError(f"{self.model_name}: {path.name} is .npy, but the model has "
                                 f"inputs {names}", hint="use .npz with one array per input")
        try:
            with open_binary(path, follow_links=True) as raw:
                if path.suffix == ".npy":
                    return {names[0]: _header(raw) if headers else np.load(raw, allow_pickle=False)}
                if not headers:
                    with np.load(raw, allow_pickle=False) as loaded:
                        return {name: loaded[name] for name in loaded.files}
                with zipfile.ZipFile(raw) as archive:
                    found = {}
                    for member in archive.namelist():
                        with archive.open(member) as stream:
                            found[member.removesuffix(".npy")] = _header(stream)
                    return found
        except Exception as exc:  # zipfile, numpy's format checks and OSError all end here
            raise ModelDataError(f"{self.model_name}: {self.what} file {path} is unreadable: "
                                 f"{str(exc)[:200]}", hint="write it with numpy.save/savez") from exc

    def _check(self, path: Path, arrays: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        expected = {t.name: t for t in self.model.inputs}
        if set(arrays) != set(expected):
            raise ModelDataError(f"{self.model_name}: {self.what} {path.name} holds arrays "
                                 f"{sorted(arrays)}, the model's inputs are {sorted(expected)}",
                                 hint="name each array after a model input")
        for name, (dtype, shape) in arrays.items():
            if dtype != expected[name].dtype:
                raise ModelDataError(
                    f"{self.model_name}: {self.what} {path.name}[{name}] is {dtype}, the model "
                    f"wants {expected[name].dtype}", hint=f"cast it with .astype('{expected[name].dtype}')")
            prof = self.profiles[name]
            lo, hi = (prof.opt, prof.opt) if self.opt_only else (prof.min, prof.max)
            if len(shape) == len(lo) and all(
                    a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True)):
                continue
            if not self.opt_only:
                raise ModelDataError(
                    f"{self.model_name}: {self.what} {path.name}[{name}] has shape {list(shape)}, "
                    f"outside the input's range {list(prof.min)}..{list(prof.max)}",
                    hint="write batches with the configured input shape")
            opt = prof.opt
            if len(shape) != len(opt):
                where = f"{len(shape)} dimensions, not {len(opt)}"
            else:
                axis = next(i for i, (s, o) in enumerate(zip(shape, opt, strict=True)) if s != o)
                where = f"dimension {axis} is {shape[axis]}, not {opt[axis]}"
            raise ModelDataError(
                f"{self.model_name}: {path.name}[{name}] has shape {list(shape)} ({where}): "
                f"TensorRT calibrates at the input's opt shape {list(opt)}",
                hint="write every calibration batch at the opt shape, or set opt to the batches' "
                     "shape")


def _header(stream: IO[bytes]) -> tuple[str, tuple[int, ...]]:
    from numpy.lib import format as npy

    version = npy.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return dtype.name, tuple(shape)
