"""Contract: every TensorRT name the runtime touches, in every branch, exists in the real
bindings of each release that branch claims. The stand-in (FakeTensorRT) fails closed: it
exposes only names in the identifier lists that tools/trt_identifiers.py read from the real PyPI
binding wheels, so a runtime that reached for any other name fails here. The names it touched
are also recorded, to show that the scenarios reached every version-specific part.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from app import InputProfile, PrecisionMode
from app.backends.tensorrt.api import TrtApi
from app.cancel import CANCEL
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import (
    DYN,
    VERSIONS,
    config,
    make_nonzero_model,
    make_tokens_model,
    runtime_for,
)
from tests.backends.tensorrt.release_names import IDENTIFIERS, identifiers, list_for, unknown_names


def drive_every_branch(fake: FakeTensorRT, tmp_path: Path, corpus: dict[str, Path]) -> set[str]:
    """Run the runtime through fp32, dynamic shapes, INT8 (static, dynamic, data, cache), DLA,
    warm-up (data-dependent outputs too), INT64/DOUBLE I/O, the precision check (engine
    inspector), the DLA placement, a foreign timing cache, parser failure, build failure, a failed
    deserialization, progress and cancel; return the names it touched."""
    import numpy as np

    fake.dla_cores = 1
    models = {**corpus, "nonzero": make_nonzero_model(tmp_path / "m" / "nonzero.onnx"),
              "tokens": make_tokens_model(tmp_path / "m" / "tokens.onnx")}
    at_opt = tmp_path / "calib" / "lightglue"
    at_opt.mkdir(parents=True)
    np.savez(at_opt / "batch_000.npz", desc0=np.ones(DYN.opt, np.float32), desc1=np.ones(DYN.opt, np.float32))
    scenarios = [
        ("dinov2_vpr", config(tmp_path / "a", "dinov2_vpr", PrecisionMode.FP32,
                              input_shapes={None: InputProfile.fixed((1, 3, 32, 32))})),
        ("lightglue", config(tmp_path / "b", "lightglue", input_shapes={"desc0": DYN, "desc1": DYN},
                             verify="infer")),
        ("lightglue", config(tmp_path / "b", "lightglue", PrecisionMode.INT8, calibration_dir=at_opt,
                             input_shapes={"desc0": DYN, "desc1": DYN})),
        ("aliked", config(tmp_path / "c", "aliked", PrecisionMode.INT8,
                          calibration_dir=corpus["calibration"] / "aliked", dla_core=0)),
        ("aliked", config(tmp_path / "c", "aliked", PrecisionMode.INT8,
                          calibration_dir=corpus["calibration"] / "aliked")),  # cache reused
        ("nonzero", config(tmp_path / "d", "nonzero", verify="infer")),
        ("tokens", config(tmp_path / "d", "tokens", verify="infer")),
    ]
    for model, cfg in scenarios:
        cfg.engine_path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        runtime = runtime_for(fake)
        runtime.compile_engine(models[model], cfg)
        if cfg.precision is not PrecisionMode.FP32:
            assert runtime.precision_in_effect(models[model], cfg.engine_path, cfg) is not None
    fake.device_props = "another device"  # the timing cache on disk is refused, replaced
    runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path / "c", "aliked"))
    fake.corrupt_engine = True
    with contextlib.suppress(Exception):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    fake.corrupt_engine = False
    fake.parser_errors = [(1, 0, "bad")]
    with contextlib.suppress(Exception):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    fake.parser_errors, fake.fail_build = [], True
    with contextlib.suppress(Exception):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    fake.fail_build = False
    if fake.has_monitor:
        fake.on_step = lambda step: CANCEL.set()
        try:
            with contextlib.suppress(Exception):
                runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
        finally:
            CANCEL.clear()
    return set(fake.names)


@pytest.mark.parametrize("shape", VERSIONS)
def test_every_name_exists_in_the_real_bindings(shape, tmp_path, corpus):
    fake = FakeTensorRT(shape)
    names = drive_every_branch(fake, tmp_path, corpus)
    # The scenarios really reached the version-specific and optional parts:
    assert {"Builder", "OnnxParser", "set_memory_pool_limit", "build_serialized_network",
            "deserialize_cuda_engine", "IInt8EntropyCalibrator2", "get_batch", "write_calibration_cache",
            "read_calibration_cache", "create_timing_cache", "set_timing_cache", "get_timing_cache",
            "DLA_core", "set_shape", "execute_async_v3", "get_error", "set_calibration_profile",
            "clear_flag", "TF32", "set_output_allocator", "log", "profiling_verbosity",
            "DETAILED", "create_engine_inspector", "get_engine_information", "JSON",
            "num_layers", "get_layer", "get_device_type", "can_run_on_DLA",
            "init_libnvinfer_plugins", "IOutputAllocator", "reallocate_output", "notify_shape",
            "get_tensor_location", "TensorLocation"} <= names
    assert {("Runtime", "DLA_core"), ("IBuilderConfig", "DLA_core")} <= fake.touched
    assert ("IProgressMonitor" in names) == shape.startswith("10.")
    assert ("EXPLICIT_BATCH" in names) == shape.startswith("8.")
    assert unknown_names(names, list_for(shape)) == []


def test_the_check_catches_a_name_of_another_release():
    assert unknown_names({"max_workspace_size"}, "10.3.0") == ["max_workspace_size"]
    assert unknown_names({"max_workspace_size"}, "8.6.1") == []
    assert unknown_names({"IProgressMonitor", "progress_monitor"}, "8.6.1") == [
        "IProgressMonitor", "progress_monitor"]


def test_the_stand_in_refuses_a_name_the_release_lacks():
    """Fail closed: what the real module of that release does not have is an AttributeError."""
    old, new = FakeTensorRT("8.6.2").module, FakeTensorRT("10.3.0").module
    assert old.DataType.INT32 == 3 and new.DataType.INT64
    with pytest.raises(AttributeError, match="INT64"):
        old.DataType.INT64  # noqa: B018
    with pytest.raises(AttributeError, match="IProgressMonitor"):
        old.IProgressMonitor  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_call"):
        new.no_such_call  # noqa: B018
    config = new.Builder(None).create_builder_config()
    with pytest.raises(AttributeError, match="max_workspace_size"):
        config.max_workspace_size = 1 << 30
    with pytest.raises(AttributeError, match="can't set"):
        config.set_flag = None


def test_the_runtime_fails_if_the_10x_path_used_max_workspace_size(tmp_path, corpus, monkeypatch):
    original = TrtApi.configure

    def old_style(self, config, precision, workspace_bytes, optimization_level):  # type: ignore[no-untyped-def]
        original(self, config, precision, workspace_bytes, optimization_level)
        config.max_workspace_size = workspace_bytes  # the TensorRT 8 way, removed in 10

    monkeypatch.setattr(TrtApi, "configure", old_style)
    with pytest.raises(AttributeError, match="max_workspace_size"):
        drive_every_branch(FakeTensorRT("10.3.0"), tmp_path, corpus)
    drive_every_branch(FakeTensorRT("8.6.2"), tmp_path / "old", corpus)  # 8.6 has it


def test_identifier_lists_come_from_the_wheels():
    for release, requirement in (("8.6.1", "tensorrt-bindings==8.6.1"),
                                 ("10.3.0", "tensorrt-cu12-bindings==10.3.0"),
                                 ("10.13.3", "tensorrt-cu13-bindings==10.13.3.9")):
        header = (IDENTIFIERS / f"trt-{release}.txt").read_text().splitlines()[0]
        assert header.startswith(f"# {requirement}:") and "tensorrt.so" in header
        assert len(identifiers(release)) > 5000


def test_the_stand_in_checks_its_own_names_at_construction(monkeypatch):
    from tests.backends.tensorrt import fake_build
    from tests.backends.tensorrt.fake_tensorrt import check_standin_names

    monkeypatch.setattr(fake_build.IBuilderConfig, "set_magic_speed", lambda self: None, raising=False)
    with pytest.raises(AssertionError, match="set_magic_speed"):
        check_standin_names.__wrapped__()
