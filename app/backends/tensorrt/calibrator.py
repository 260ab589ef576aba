"""INT8 entropy calibration that streams batches to the GPU and reuses a calibration cache.

The cache is keyed by the model (name, ONNX sha256, OPT shapes), the TensorRT version and the
calibration data's fingerprint: with data, the cache written for that exact model and data is
reused (TensorRT then skips calibration); without data, the newest cache of that exact model for
this TensorRT version is used; with neither, :class:`CalibrationCacheError`.

Every callback records its exception in a :class:`CallbackErrors` instead of raising it into
TensorRT (which would read it as "no more batches"), feeds no batch after one failed, and then
writes no calibration cache: a table made from part of the data must not be kept under the
whole data's key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app import events
from app.backends.calibration import CalibrationSet
from app.backends.tensorrt.caches import (
    MAX_CACHE_BYTES,
    calibration_cache_path,
    find_calibration_cache,
    not_a_folder,
)
from app.backends.tensorrt.callbacks import CallbackErrors
from app.cache.fsread import read_small
from app.cache.publish import atomic_write_bytes
from app.cache.record import calibration_fingerprint
from app.errors import CalibrationCacheError


def calibration_plan(calib: CalibrationSet, root: Path, trt_version: str,
                     model_key: str) -> tuple[Path, Path | None]:
    """(where to write the cache, which cache to read) for this model's calibration;
    ``model_key`` is :func:`app.backends.tensorrt.caches.calibration_model_key`."""
    data_fp = calibration_fingerprint(calib.folder)
    if data_fp is not None:
        target = calibration_cache_path(root, calib.model_name, trt_version, model_key, data_fp)
        return target, target if target.is_file() else None
    existing = find_calibration_cache(root, calib.model_name, trt_version, model_key)
    if existing is None:
        pattern = f"{calib.model_name}__trt{trt_version}__{model_key}__*.calib"
        raise CalibrationCacheError(
            f"{calib.model_name}: int8 needs calibration batches in {calib.folder} or a "
            f"calibration cache {root / 'calibration'}/{pattern} made from this very model "
            "(same ONNX bytes and opt shapes)",
            hint="add calibration data, or build this model in fp16/fp32")
    return existing, existing


def make_calibrator(trt: Any, calib: CalibrationSet, write_to: Path, read_from: Path | None,
                    memory: Any, errors: CallbackErrors, dtypes: dict[str, str],
                    warn: Callable[[str, str], None]) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``calib``'s batches, one batch in GPU memory at a time,
    each array cast to its network input's dtype (``dtypes``: TensorRT 8 reads int64 data as
    int32, for one)."""
    has_data = bool(calib.files)

    class StreamingCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches: Iterator[dict[str, Any]] | None = None  # read only if asked for
            self._device: dict[str, tuple[int, int]] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in each array's shape

        def get_batch(self, names: list[str], *args: Any) -> list[int] | None:
            if errors.failed:
                return None
            with errors.guard("get_batch"):
                return self._feed(names)
            return None

        def _feed(self, names: list[str]) -> list[int] | None:
            if self._batches is None:
                self._batches = calib.batches()
            batch = next(self._batches, None)
            if batch is None:
                return None
            import numpy as np

            pointers = []
            for name in names:
                array = np.ascontiguousarray(batch[name], dtype=dtypes[name])
                ptr, size = self._device.get(name, (0, 0))
                if size < array.nbytes:
                    ptr, size = memory.alloc(array.nbytes), array.nbytes
                    self._device[name] = (ptr, size)
                memory.upload(ptr, array)
                pointers.append(ptr)
            return pointers

        def read_calibration_cache(self, *args: Any) -> bytes | None:
            if read_from is None:
                return None
            try:
                return read_small(read_from, MAX_CACHE_BYTES)
            except OSError as exc:
                if has_data:
                    return None  # TensorRT then calibrates from the batches again
                with errors.guard("read_calibration_cache"):
                    raise CalibrationCacheError(
                        f"{calib.model_name}: calibration cache {read_from} is unreadable ({exc}) "
                        "and there are no calibration batches to rebuild it",
                        hint="add calibration data, or build this model in fp16/fp32") from exc
                return None

        def write_calibration_cache(self, cache: Any, *args: Any) -> None:
            if errors.failed:
                return
            planted = not_a_folder(write_to.parent)
            if planted:  # the table only saves the next calibration; the batches are here
                warn(events.CALIBRATION_UNSAVED, f"{write_to.parent} is {planted}, not a folder: "
                     "the calibration table is not saved (the next build calibrates again)")
                return
            with errors.guard("write_calibration_cache"):
                atomic_write_bytes(write_to, bytes(memoryview(cache)))

    return StreamingCalibrator()
