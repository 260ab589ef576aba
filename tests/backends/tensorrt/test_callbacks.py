"""Exceptions in the Python callbacks TensorRT calls (calibrator, progress monitor, logger).

The stand-in (FakeTensorRT) wraps every callback as the real bindings' C++ wrapper does: an
exception is printed and becomes false ("no more batches", "cancel"). These tests show that the
runtime never lets one reach that wrapper, and re-raises it once the build returns.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from app import EngineBuildError, ModelDataError, PrecisionMode
from app.errors import CacheWriteError
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import ALIKED, VERSIONS, calibration_cache_file, config, runtime_for


@pytest.fixture(params=VERSIONS)
def fake(request):
    return FakeTensorRT(request.param)


def _batches(tmp_path: Path, corpus: dict[str, Path]) -> Path:
    folder = tmp_path / "calib" / "aliked"
    shutil.copytree(corpus["calibration"] / "aliked", folder)
    return folder


def _swallowed(fake: FakeTensorRT) -> list[tuple[object, ...]]:
    return [c for c in fake.calls if c[0] == "swallowed"]


def test_the_stand_in_swallows_like_the_real_wrapper(capsys):
    """What the bindings do with an exception in a callback (pyInt8.cpp, pyCore.cpp)."""
    fake = FakeTensorRT("10.3.0")

    class Broken:
        def get_batch(self, names):
            raise ValueError("bad batch")

    assert fake.callback(Broken(), "IInt8EntropyCalibrator2", "get_batch", False, ["x"]) is False
    assert "[ERROR] Exception caught in get_batch(): ValueError: bad batch" in capsys.readouterr().err


def test_a_batch_failing_mid_calibration_is_an_error_not_the_end_of_the_data(fake, tmp_path, corpus):
    folder = _batches(tmp_path, corpus)
    bad = folder / "batch_002.npy"
    bad.write_bytes(bad.read_bytes()[:200])  # the header is intact, the data is cut short
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=folder)
    with pytest.raises(ModelDataError, match=r"batch_002\.npy is unreadable"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert not _swallowed(fake)
    assert not list(tmp_path.glob("calibration/*.calib"))  # no table from batches 0..1
    assert not list(tmp_path.glob("*.engine"))
    assert not fake.gpu.allocated                            # buffers freed


def test_a_bad_batch_is_refused_before_the_build(fake, tmp_path, corpus):
    folder = _batches(tmp_path, corpus)
    np.save(folder / "batch_003.npy", np.zeros((1, 3, 64, 64), np.float64))
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=folder)
    with pytest.raises(ModelDataError, match=r"batch_003.npy\[image\] is float64"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert not [c for c in fake.calls if c[0] == "build"]
    assert fake.batches == 0


def test_a_calibration_cache_that_cannot_be_written_fails_the_build(fake, tmp_path, corpus,
                                                                    monkeypatch):
    """A write that fails inside TensorRT's write_calibration_cache callback ends the build with
    that error instead of being swallowed by the bindings. The failing write is simulated (a
    read-only volume: root here ignores permission bits; something planted in place of the
    folder is not a write error but a table left unsaved, test_calibration.py)."""
    import app.backends.tensorrt.caches as caches

    def refuse(path, payload, mode=0o644):  # type: ignore[no-untyped-def]
        raise CacheWriteError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(caches, "atomic_write_bytes", refuse)
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
    with pytest.raises(CacheWriteError, match="calibration"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert not _swallowed(fake)
    assert not list(tmp_path.glob("*.engine"))


class BrokenLogger(logging.Logger):
    """A deliberately failing Python logger: the progress monitor's events raise."""

    def log(self, level, msg, *args, **kw):  # type: ignore[no-untyped-def,override]
        raise RuntimeError("event sink is broken")


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3"])
def test_an_exception_in_the_progress_monitor_is_raised_not_read_as_cancel(version, tmp_path, corpus):
    fake = FakeTensorRT(version)
    runtime = runtime_for(fake)
    runtime.logger = BrokenLogger("broken", logging.INFO)
    with pytest.raises(EngineBuildError, match=r"progress monitor.*event sink is broken"):
        runtime.compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    assert not _swallowed(fake)
    assert not list(tmp_path.glob("*.engine"))


def test_the_logger_never_raises_into_tensorrt(fake):
    from app.backends.tensorrt.api import CallbackErrors, logging_to

    errors = CallbackErrors()

    def broken(severity: str, message: str) -> None:
        raise OSError("stderr is closed")

    with logging_to(fake.module, broken, errors) as (logger, _):
        fake.log(logger, "WARNING", "a warning")
    assert not _swallowed(fake)
    with pytest.raises(EngineBuildError, match=r"TensorRT logger.*stderr is closed"):
        errors.raise_first("aliked")


def test_an_unreadable_cache_without_batches_is_a_calibration_error(fake, tmp_path, corpus):
    from app import CalibrationCacheError
    from app.backends.tensorrt.caches import MAX_CACHE_BYTES

    # A regular file the safe reader refuses (larger than any calibration table): unreadable.
    path = calibration_cache_file(tmp_path, fake.__version__, "aliked", corpus["aliked"], ALIKED)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        handle.truncate(MAX_CACHE_BYTES + 1)
    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=tmp_path / "no-batches")
    with pytest.raises(CalibrationCacheError, match=r"unreadable.*no calibration batches"):
        runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert not _swallowed(fake)
