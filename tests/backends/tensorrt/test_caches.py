"""TensorRT's timing and calibration caches in the cache volume: whatever is planted under
their names is read as "no cache" at once (no TensorRT needed for these reads)."""

from __future__ import annotations

from types import SimpleNamespace

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


@pytest.mark.parametrize("kind", [k for k in PLANTED_KINDS if not k.startswith("folder")])
def test_a_thing_planted_as_the_timing_folder_costs_the_timings_not_the_build(tmp_path, kind):
    """The timing cache only saves build time: with a FIFO, a socket, a device, a link or a
    file where its folder goes, the built cache is not saved (a warning names what stands
    there) and nothing is written through it; the build goes on. The TensorRT side is a
    stand-in of the two calls save() makes (get_timing_cache, serialize)."""
    warnings: list[tuple[str, str]] = []
    cache = TimingCache(tmp_path, "10.3.0", 87, "Orin", lambda k, m: warnings.append((k, m)))
    cache.path.parent.mkdir()
    (cache.path.parent / "keep").write_bytes(b"timings")
    target = plant(cache.path.parent, kind, tmp_path / "outside")
    before = target.read_bytes() if target is not None else None
    built = SimpleNamespace(serialize=lambda: b"new timings")
    config = SimpleNamespace(get_timing_cache=lambda: built)
    assert within(2, lambda: cache.save(config)) == b"new timings"
    [(event, message)] = warnings
    assert event == "c10.engine.timing_cache.unsaved" and "not a folder" in message
    if target is not None:
        assert target.read_bytes() == before
    assert not (tmp_path / "outside" / cache.path.name).exists()


@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_only_a_regular_calibration_cache_is_found(tmp_path, kind):
    path = calibration_cache_path(tmp_path, "m", "10.3.0", "k" * 16, "f" * 64)
    path.parent.mkdir()
    path.write_bytes(b"calibration")
    assert find_calibration_cache(tmp_path, "m", "10.3.0", "k" * 16) == path
    plant(path, kind, tmp_path / "outside")
    found = within(2, lambda: find_calibration_cache(tmp_path, "m", "10.3.0", "k" * 16))
    assert found == (path if kind in ("huge", "sparse-8g") else None)
