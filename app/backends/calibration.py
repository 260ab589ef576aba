"""INT8 calibration batches: ``<calibration_path>/<model_name>/*.npz|*.npy``, one batch a file.
The accuracy gate's sample inputs use the same format and checks (``what="sample"``).

An ``.npz`` holds one array per model input, named after it; an ``.npy`` is the batch of a
single-input model. Batches are read one at a time (never all at once) and each is checked
against the model's inputs: names, dtype, and shape within the input's profile. Both backends
use this; numpy is imported only here and only on the INT8 build path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.backends.onnx_model import ModelInterface
from app.cache.names import calibration_files
from app.errors import CalibrationCacheError, ModelDataError
from app.types import InputProfile

__all__ = ["CalibrationSet"]


class CalibrationSet:
    """The validated calibration batches of one model."""

    def __init__(self, folder: Path | None, model: ModelInterface,
                 profiles: dict[str, InputProfile], model_name: str, *,
                 what: str = "calibration") -> None:
        self.folder = folder
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
                hint="add calibration data, or build this model in fp16/fp32")
        return self

    def batches(self) -> Iterator[dict[str, Any]]:
        """Yield ``{input name: array}`` per file, validated; ModelDataError on a bad batch."""
        names = [t.name for t in self.model.inputs]
        for path in self.files:
            arrays = self._load_npz(path) if path.suffix == ".npz" else self._load_npy(path, names)
            self._check(path, arrays)
            yield arrays

    def _load_npz(self, path: Path) -> dict[str, Any]:
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as loaded:
                return {name: loaded[name] for name in loaded.files}
        except Exception as exc:
            raise ModelDataError(f"{self.model_name}: {self.what} file {path} is unreadable: "
                                 f"{str(exc)[:200]}", hint="write it with numpy.savez") from exc

    def _load_npy(self, path: Path, names: list[str]) -> dict[str, Any]:
        import numpy as np

        if len(names) != 1:
            raise ModelDataError(f"{self.model_name}: {path.name} is .npy, but the model has "
                                 f"inputs {names}", hint="use .npz with one array per input")
        try:
            return {names[0]: np.load(path, allow_pickle=False)}
        except Exception as exc:
            raise ModelDataError(f"{self.model_name}: {self.what} file {path} is unreadable: "
                                 f"{str(exc)[:200]}", hint="write it with numpy.save") from exc

    def _check(self, path: Path, arrays: dict[str, Any]) -> None:
        expected = {t.name: t for t in self.model.inputs}
        if set(arrays) != set(expected):
            raise ModelDataError(f"{self.model_name}: {self.what} {path.name} holds arrays "
                                 f"{sorted(arrays)}, the model's inputs are {sorted(expected)}",
                                 hint="name each array after a model input")
        for name, array in arrays.items():
            if array.dtype.name != expected[name].dtype:
                raise ModelDataError(
                    f"{self.model_name}: {self.what} {path.name}[{name}] is {array.dtype.name}, "
                    f"the model wants {expected[name].dtype}",
                    hint=f"cast it with .astype('{expected[name].dtype}')")
            prof = self.profiles[name]
            shape = tuple(array.shape)
            ok = len(shape) == len(prof.min) and all(
                lo <= s <= hi for s, lo, hi in zip(shape, prof.min, prof.max, strict=True))
            if not ok:
                raise ModelDataError(
                    f"{self.model_name}: {self.what} {path.name}[{name}] has shape {list(shape)}, "
                    f"outside the input's range {list(prof.min)}..{list(prof.max)}",
                    hint="write batches with the configured input shape")
