"""TensorRT's timing and INT8 calibration caches in the cache volume (written under the cache
lock), and the calibrator: docs/tensorrt.md#what-the-backend-does-for-each-engine-it-builds."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app import events
from app.backends.calibration import NO_DATA_HINT, CalibrationSet
from app.backends.tensorrt.api import CallbackErrors
from app.backends.tensorrt.runner import reuse_buffer
from app.cache.fsread import describe_mode, read_small
from app.cache.names import calibration_folder, timing_folder
from app.cache.publish import atomic_write_bytes
from app.cache.record import calibration_fingerprint, fingerprint
from app.errors import CalibrationCacheError
from app.values import InputProfile

#: Timing and calibration caches are KiB to a few MiB; anything larger was not written by us.
MAX_CACHE_BYTES = 256 << 20


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "gpu"


def timing_cache_path(root: Path, trt_version: str, sm: int, device: str) -> Path:
    return timing_folder(root) / f"trt{trt_version}__sm{sm}__{_slug(device)}.timing"


def calibration_model_key(onnx_sha256: str, profiles: dict[str, InputProfile]) -> str:
    opt = {name: list(profile.opt) for name, profile in sorted(profiles.items())}
    return fingerprint({"onnx_sha256": onnx_sha256, "opt": opt})[:16]


def calibration_cache_path(root: Path, model: str, trt_version: str, model_key: str,
                           data_fp: str = "*") -> Path:
    """The table made from data ``data_fp``; by default the pattern of any data's table."""
    return calibration_folder(root) / f"{model}__trt{trt_version}__{model_key}__{data_fp[:16]}.calib"


def find_calibration_cache(root: Path, model: str, trt_version: str, model_key: str) -> Path | None:
    """The newest calibration cache of this model for this TensorRT version, whatever data."""
    folder = calibration_folder(root)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(calibration_cache_path(root, model, trt_version, model_key).name):
        try:
            st = path.lstat()  # a planted link, FIFO or folder is not a cache
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, path))
    return max(found)[1] if found else None


def save_cache(path: Path, data: bytes, warn: Callable[[str, str], None], kind: str,
               lost: str) -> None:
    """Write ``data`` to ``path`` unless something planted stands at its folder: then only
    ``warn`` that ``lost`` (a cache only saves time; the engine is what matters)."""
    try:
        mode = path.parent.lstat().st_mode
    except FileNotFoundError:
        mode = stat.S_IFDIR
    if not stat.S_ISDIR(mode):
        warn(kind, f"{path.parent} is {describe_mode(mode)}, not a folder: {lost}")
        return
    atomic_write_bytes(path, data)


class TimingCache:
    """Load before the build, combine with what is on disk and save after it."""

    def __init__(self, root: Path, trt_version: str, sm: int, device: str,
                 warn: Callable[[str, str], None]) -> None:
        self.path = timing_cache_path(root, trt_version, sm, device)
        self.warn = warn
        self.loaded = self._read()

    def _read(self) -> bytes:
        try:
            return read_small(self.path, MAX_CACHE_BYTES)
        except OSError:
            return b""

    def attach(self, config: Any) -> Any:
        """Attach the cache on disk, else an empty one; None if TensorRT refuses even that."""
        if self.loaded:
            cache = config.create_timing_cache(self.loaded)
            if cache is None:
                problem = "is unreadable"
            elif not config.set_timing_cache(cache, False):
                problem = "was made on a device with other properties"
            else:
                return cache
            self.warn(events.TIMING_RESET, f"timing cache {self.path} {problem}: starting an empty one "
                      "(this build takes its full time)")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            self.warn(events.TIMING_RESET, "TensorRT refused an empty timing cache: building without one")
            return None
        return cache

    def save(self, config: Any) -> bytes | None:
        cache = config.get_timing_cache()
        if cache is None:
            self.warn(events.TIMING_UNSAVED, f"TensorRT returned no timing cache after the build; "
                      f"{self.path} is left as it was")
            return None
        on_disk = self._read()
        if on_disk and on_disk != self.loaded:
            # Written by another build since we loaded it: keep both sets of timings.
            other = config.create_timing_cache(on_disk)
            if other is None or not cache.combine(other, False):
                self.warn(events.TIMING_RESET, f"timing cache {self.path}, written since by another build, "
                          "does not combine with this one: replacing it")
        data = bytes(memoryview(cache.serialize()))
        save_cache(self.path, data, self.warn, events.TIMING_UNSAVED,
                   "the timing cache is not saved (the next build takes its full time)")
        return data


def calibration_plan(calib: CalibrationSet, root: Path, trt_version: str,
                     model_key: str) -> tuple[Path, Path | None]:
    """(where to write the cache, which cache to read): with data, the cache of this exact model
    and data; without, the newest of this exact model; with neither, CalibrationCacheError."""
    data_fp = calibration_fingerprint(calib.folder)
    if data_fp is not None:
        target = calibration_cache_path(root, calib.model_name, trt_version, model_key, data_fp)
        return target, target if target.is_file() else None
    existing = find_calibration_cache(root, calib.model_name, trt_version, model_key)
    if existing is None:
        pattern = calibration_cache_path(root, calib.model_name, trt_version, model_key)
        raise CalibrationCacheError(
            f"{calib.model_name}: int8 needs calibration batches in {calib.folder} or a "
            f"calibration cache {pattern} made from this very model "
            "(same ONNX bytes and opt shapes)",
            hint=NO_DATA_HINT)
    return existing, existing


def make_calibrator(trt: Any, calib: CalibrationSet, write_to: Path, read_from: Path | None,
                    memory: Any, errors: CallbackErrors, dtypes: dict[str, str],
                    warn: Callable[[str, str], None]) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``calib``'s batches, cast to ``dtypes``. After a
    failed callback it feeds no batch and writes no cache: a table made from part of the data
    must not be kept under the whole data's key."""
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
                ptr = reuse_buffer(memory, self._device, name, array.nbytes)
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
                        hint=NO_DATA_HINT) from exc
                return None

        def write_calibration_cache(self, cache: Any, *args: Any) -> None:
            if errors.failed:
                return
            with errors.guard("write_calibration_cache"):
                save_cache(write_to, bytes(memoryview(cache)), warn, events.CALIBRATION_UNSAVED,
                           "the calibration table is not saved (the next build calibrates again)")

    return StreamingCalibrator()
