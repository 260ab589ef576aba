"""TensorRT's timing cache and INT8 calibration caches, kept in the cache volume.

::

    <cache_root>/timing/trt10.3.0__sm87__orin.timing         one per (TensorRT version, device)
    <cache_root>/calibration/<model>__trt10.3.0__<fp16>.calib  one per model, version, data

Both are written with :func:`app.cache.publish.atomic_write_bytes` while the compiler holds the
cache lock. A timing cache only combines with caches of the exact same TensorRT version.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small
from app.cache.publish import atomic_write_bytes

__all__ = ["MAX_CACHE_BYTES", "TimingCache", "calibration_cache_path", "find_calibration_cache"]

#: Timing and calibration caches are KiB to a few MiB; anything larger was not written by us.
MAX_CACHE_BYTES = 256 << 20


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "gpu"


def calibration_cache_path(root: Path, model: str, trt_version: str, data_fp: str) -> Path:
    return root / "calibration" / f"{model}__trt{trt_version}__{data_fp[:16]}.calib"


def find_calibration_cache(root: Path, model: str, trt_version: str) -> Path | None:
    """The newest calibration cache of ``model`` for this TensorRT version, whatever its data."""
    folder = root / "calibration"
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(f"{model}__trt{trt_version}__*.calib"):
        try:
            st = path.lstat()  # a planted link, FIFO or folder is not a cache
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, path))
    return max(found)[1] if found else None


class TimingCache:
    """Load before the build, combine with what is on disk and save after it."""

    def __init__(self, root: Path, trt_version: str, sm: int, device: str) -> None:
        self.path = root / "timing" / f"trt{trt_version}__sm{sm}__{_slug(device)}.timing"
        self.loaded = self._read()

    def _read(self) -> bytes:
        try:
            return read_small(self.path, MAX_CACHE_BYTES)
        except OSError:
            return b""

    def attach(self, config: Any) -> Any:
        cache = config.create_timing_cache(self.loaded)
        config.set_timing_cache(cache, False)
        return cache

    def save(self, config: Any) -> bytes:
        cache = config.get_timing_cache()
        on_disk = self._read()
        if on_disk and on_disk != self.loaded:
            # Written by another build since we loaded it: keep both sets of timings.
            cache.combine(config.create_timing_cache(on_disk), False)
        data = bytes(memoryview(cache.serialize()))
        atomic_write_bytes(self.path, data)
        return data
