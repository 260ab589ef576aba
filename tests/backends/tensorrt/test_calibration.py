"""INT8 calibration through the stand-ins (FakeTensorRT reads every batch through its device
pointer, as TensorRT does): the shape it is read at, the types it is read as, the cache key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import InputProfile, ModelDataError, PrecisionMode, Sha256Sidecar
from app.cli import exit_code_for
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import (
    DYN,
    VERSIONS,
    config,
    make_tokens_model,
    runtime_for,
    start_job,
    write_job,
    write_standin_site,
)
from tests.helpers import json_events, plant


@pytest.fixture(params=VERSIONS)
def fake(request):
    return FakeTensorRT(request.param)


def write_batches(folder: Path, shapes: dict[str, tuple[int, ...]], count: int = 3,
                  dtypes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for i in range(count):
        arrays = {name: (rng.standard_normal(shape) * 50).astype((dtypes or {}).get(name, "float32"))
                  for name, shape in shapes.items()}
        np.savez(folder / f"batch_{i:03d}.npz", **arrays)
        batches.append(arrays)
    return batches


def _dynamic(tmp_path: Path, folder: Path) -> Any:
    return config(tmp_path, "lightglue", PrecisionMode.INT8, input_shapes={"desc0": DYN, "desc1": DYN},
                  calibration_dir=folder)


def test_a_dynamic_network_calibrates_at_opt_through_a_calibration_profile(fake, tmp_path, corpus):
    batches = write_batches(tmp_path / "calib", {"desc0": DYN.opt, "desc1": DYN.opt})
    runtime_for(fake).compile_engine(corpus["lightglue"], _dynamic(tmp_path, tmp_path / "calib"))
    [(_, shapes)] = [c for c in fake.calls if c[0] == "set_calibration_profile"]
    assert shapes == {name: (DYN.opt, DYN.opt, DYN.opt) for name in ("desc0", "desc1")}
    assert not [c for c in fake.calls if c[0] == "overread"]
    for name in ("desc0", "desc1"):  # what TensorRT read is exactly the data, batch by batch
        np.testing.assert_array_equal(np.stack(fake.calibration_seen[name]),
                                      np.stack([b[name] for b in batches]))


@pytest.mark.parametrize(("shape", "says"), [((1, 32, 64), "dimension 1 is 32, not 16"),
                                             ((1, 8, 64), "dimension 1 is 8, not 16"),
                                             ((16, 64), "2 dimensions, not 3")])
def test_a_batch_not_at_opt_is_refused_before_the_build(shape, says, tmp_path, corpus):
    fake = FakeTensorRT("10.3.0")
    folder = tmp_path / "calib"
    write_batches(folder, {"desc0": DYN.opt, "desc1": DYN.opt})
    np.savez(folder / "batch_001.npz", desc0=np.zeros(shape, np.float32),
             desc1=np.zeros(DYN.opt, np.float32))
    with pytest.raises(ModelDataError, match=rf"batch_001\.npz\[desc0\].*\({says}\).*opt shape") as caught:
        runtime_for(fake).compile_engine(corpus["lightglue"], _dynamic(tmp_path, folder))
    assert exit_code_for(caught.value) == 65
    assert not [c for c in fake.calls if c[0] == "build"]


def test_the_io_check_expects_the_types_the_parser_gives(fake, tmp_path):
    """8.x: INT64 -> INT32; every release: DOUBLE -> FLOAT. The engine is right, not 'wrong'."""
    model = make_tokens_model(tmp_path / "tokens.onnx")
    entry = runtime_for(fake).compile_engine(model, config(tmp_path, "tokens", verify="infer"))
    assert Sha256Sidecar.verify(entry.engine_path)
    assert not [c for c in fake.calls if c[0] == "overrun"]  # warm-up buffers of the right size


def test_calibration_arrays_are_cast_to_the_engines_types(fake, tmp_path):
    model = make_tokens_model(tmp_path / "tokens.onnx")
    batches = write_batches(tmp_path / "calib", {"ids": (1, 8), "x": (1, 8)}, dtypes={"ids": "int64"})
    cfg = config(tmp_path, "tokens", PrecisionMode.INT8, calibration_dir=tmp_path / "calib")
    runtime_for(fake).compile_engine(model, cfg)
    seen = np.stack(fake.calibration_seen["ids"])
    assert seen.dtype == (np.int32 if fake.version < (10, 0) else np.int64)
    np.testing.assert_array_equal(seen, np.stack([b["ids"] for b in batches]))


def test_a_retrained_model_under_the_same_name_does_not_reuse_stale_scales(fake, tmp_path, corpus):
    from tools.demo import make_aliked

    cfg = config(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
    runtime_for(fake).compile_engine(corpus["aliked"], cfg)
    assert fake.batches == 4
    retrained = make_aliked(tmp_path / "v2" / "aliked.onnx", seed=11)  # other weights, same I/O
    runtime_for(fake).compile_engine(retrained, cfg)
    assert fake.batches == 8  # calibrated again, from the same data
    assert len(list((tmp_path / "calibration").glob("aliked__*.calib"))) == 2
    runtime_for(fake).compile_engine(retrained, cfg)
    assert fake.batches == 8  # and its own table is reused


def test_without_data_only_a_cache_of_this_very_model_is_used(fake, tmp_path, corpus):
    """A table made for other OPT shapes, or for another ONNX file of the same name, is not used."""
    from app import CalibrationCacheError
    from tools.demo import make_lightglue

    write_batches(tmp_path / "calib", {"desc0": DYN.opt, "desc1": DYN.opt})
    runtime_for(fake).compile_engine(corpus["lightglue"], _dynamic(tmp_path, tmp_path / "calib"))
    same = _dynamic(tmp_path, tmp_path / "no-data")
    runtime_for(fake).compile_engine(corpus["lightglue"], same)  # this very model: its table
    assert fake.batches == 3
    other_opt = InputProfile(DYN.min, (1, 32, 64), DYN.max)
    other_shapes = config(tmp_path, "lightglue", PrecisionMode.INT8, calibration_dir=tmp_path / "no-data",
                          input_shapes={"desc0": other_opt, "desc1": other_opt})
    retrained = make_lightglue(tmp_path / "v2" / "lightglue.onnx", seed=9)
    for model, cfg in ((corpus["lightglue"], other_shapes), (retrained, same)):
        with pytest.raises(CalibrationCacheError, match=r"lightglue__trt.*made from this very model"):
            runtime_for(fake).compile_engine(model, cfg)
    assert fake.batches == 3


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "socket"])
def test_a_thing_planted_as_the_calibration_folder_costs_the_table_not_the_build(tmp_path, corpus,
                                                                               kind):
    """`engine-init run` with FakeTensorRT 10.3 as the `tensorrt` package of a real process: an
    INT8 build with calibration batches, and a FIFO, a socket or a link to /dev/zero where the
    calibration tables' folder goes. The table is only a cache (the batches are here): it is not
    saved, a warning names what stands there, and the engine is built and published."""
    site = write_standin_site(tmp_path / "site", "10.3.0")
    job = write_job(tmp_path, corpus["aliked"], precision="int8")
    job.write_text(job.read_text() + f"calibration_path: {corpus['calibration']}\n")
    (tmp_path / "cache").mkdir()
    plant(tmp_path / "cache" / "calibration", kind, tmp_path / "outside")
    proc = start_job(job, site, L4T_VERSION="36.4.3", FAKE_TRT_STEP_S="0.001")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    [warning] = [e for e in json_events(stderr) if e["kind"] == "c10.engine.calibration_cache.unsaved"]
    assert "not a folder" in warning["msg"] and warning["kv"]["model_name"] == "aliked"
    assert list((tmp_path / "cache").glob("aliked__*_int8.engine"))
