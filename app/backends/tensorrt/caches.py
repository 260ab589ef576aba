"""TensorRT's timing cache and INT8 calibration caches, kept in the cache volume.

::

    <cache_root>/timing/trt10.3.0__sm87__orin.timing       one per (TensorRT version, device)
    <cache_root>/calibration/<model>__trt10.3.0__<model key>__<data key>.calib

A calibration table belongs to one model name, TensorRT version, model key (the sha256 of the
ONNX bytes and the OPT shapes it was made at: a retrained model under the same name, or other
shapes, must not reuse stale scales) and data key (the calibration data's fingerprint,
:func:`app.cache.record.calibration_fingerprint`).

Both are written with :func:`app.cache.publish.atomic_write_bytes` while the compiler holds the
cache lock. A timing cache only combines with caches of the exact same TensorRT version, and
TensorRT refuses one made on a device with other properties (``set_timing_cache`` returns
False); an unreadable or refused cache is replaced by an empty one, with a
``c10.engine.timing_cache.reset`` warning, and a cache TensorRT does not hand back after the
build is not saved (``c10.engine.timing_cache.unsaved``).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import events
from app.cache.fsread import describe_mode, read_small
from app.cache.names import calibration_folder, timing_folder
from app.cache.publish import atomic_write_bytes
from app.cache.record import fingerprint
from app.values import InputProfile

#: Timing and calibration caches are KiB to a few MiB; anything larger was not written by us.
MAX_CACHE_BYTES = 256 << 20


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "gpu"


def timing_cache_path(root: Path, trt_version: str, sm: int, device: str) -> Path:
    """The timing cache of one TensorRT version (the full one, with its build) and device."""
    return timing_folder(root) / f"trt{trt_version}__sm{sm}__{_slug(device)}.timing"


def calibration_model_key(onnx_sha256: str, profiles: dict[str, InputProfile]) -> str:
    """What ties a calibration table to its model: the ONNX bytes and the OPT shapes."""
    opt = {name: list(profile.opt) for name, profile in sorted(profiles.items())}
    return fingerprint({"onnx_sha256": onnx_sha256, "opt": opt})[:16]


def calibration_cache_path(root: Path, model: str, trt_version: str, model_key: str,
                           data_fp: str) -> Path:
    return calibration_folder(root) / f"{model}__trt{trt_version}__{model_key}__{data_fp[:16]}.calib"


def find_calibration_cache(root: Path, model: str, trt_version: str, model_key: str) -> Path | None:
    """The newest calibration cache of this model (name, bytes, OPT shapes) for this TensorRT
    version, whatever data it was made from."""
    folder = calibration_folder(root)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(f"{model}__trt{trt_version}__{model_key}__*.calib"):
        try:
            st = path.lstat()  # a planted link, FIFO or folder is not a cache
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, path))
    return max(found)[1] if found else None


def timing_cache_present(root: Path, trt_version: str, sm: int, device: str) -> bool:
    """Whether a build would load a timing cache (a non-empty regular file; not read)."""
    try:
        st = timing_cache_path(root, trt_version, sm, device).lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_CACHE_BYTES


def not_a_folder(folder: Path) -> str:
    """What stands at a cache's folder when it is not a folder (a FIFO, a link to a device...),
    planted there: such a cache is not saved. "" when it is a folder or absent (then created)."""
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return ""
    return "" if stat.S_ISDIR(mode) else describe_mode(mode)


class TimingCache:
    """Load before the build, combine with what is on disk and save after it. ``warn(kind,
    message)`` reports a cache that could not be used or saved."""

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
        folder = not_a_folder(self.path.parent)
        if folder:  # planted there: the cache only saves time, the engine is what matters
            self.warn(events.TIMING_UNSAVED, f"{self.path.parent} is {folder}, not a folder: the "
                      "timing cache is not saved (the next build takes its full time)")
            return data
        atomic_write_bytes(self.path, data)
        return data

