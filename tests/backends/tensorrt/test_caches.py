"""TensorRT's timing and calibration caches in the cache volume: whatever is planted under
their names is read as "no cache" at once (no TensorRT needed for these reads)."""

from __future__ import annotations

import pytest

from app.backends.tensorrt.caches import TimingCache, calibration_cache_path, find_calibration_cache
from tests.helpers import PLANTED_KINDS, plant, within


def _ignore(kind: str, message: str) -> None:
    """Timing-cache warnings are not what these tests look at."""


def test_a_timing_cache_is_read_back(tmp_path):
    cache = TimingCache(tmp_path, "10.3.0", 87, "Orin", _ignore)
    cache.path.parent.mkdir()
    cache.path.write_bytes(b"timings")
    assert TimingCache(tmp_path, "10.3.0", 87, "Orin", _ignore).loaded == b"timings"


@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_a_planted_timing_cache_is_no_cache(tmp_path, kind):
    path = TimingCache(tmp_path, "10.3.0", 87, "Orin", _ignore).path
    path.parent.mkdir()
    path.write_bytes(b"timings")
    target = plant(path, kind, tmp_path / "outside")
    loaded = within(2, lambda: TimingCache(tmp_path, "10.3.0", 87, "Orin", _ignore).loaded)
    # 8 MiB is a plausible timing cache (TensorRT judges its content); 8 GiB is not.
    assert loaded == (path.read_bytes() if kind == "huge" else b"")
    if target is not None:
        assert target.read_bytes() == b"timings"


@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_only_a_regular_calibration_cache_is_found(tmp_path, kind):
    path = calibration_cache_path(tmp_path, "m", "10.3.0", "k" * 16, "f" * 64)
    path.parent.mkdir()
    path.write_bytes(b"calibration")
    assert find_calibration_cache(tmp_path, "m", "10.3.0", "k" * 16) == path
    plant(path, kind, tmp_path / "outside")
    found = within(2, lambda: find_calibration_cache(tmp_path, "m", "10.3.0", "k" * 16))
    assert found == (path if kind in ("huge", "sparse-8g") else None)
