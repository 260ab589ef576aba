"""The three mission networks (built like ALIKED, LightGlue and DINOv2: tests/backends/tensorrt/
networks.py) through the TensorRT path on the stand-in (TensorRT cannot run here) for 8.6 and
10.3, as the real releases treat them: built, refused early with the fix, or checked."""

from __future__ import annotations

import logging
import time

import pytest

from app import InputProfile, ModelDataError, PrecisionMode
from app.backends.onnx_model import inspect_model
from app.backends.tensorrt.api import process_logger
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import config, runtime_for
from tests.backends.tensorrt.networks import make_aliked, make_dinov2, make_lightglue

ALIKED = {None: InputProfile.fixed((1, 3, 16, 16))}
MATCHER = {k: InputProfile((1, 8, 16), (1, 32, 16), (1, 64, 16)) for k in ("desc0", "desc1")}
RELEASES = ["8.6.2", "10.3.0"]


def _kinds(log, kind):
    return [r for r in log.records if r.kind == kind]


def test_aliked_with_deformconv_is_refused_on_8_6_before_any_build(tmp_path, events):
    """8.6's parser has no DeformConv importer: refused in seconds (exit 65) naming the op, the
    release and the fix, where the build used to be attempted (its error after the parse)."""
    fake, (logger, _) = FakeTensorRT("8.6.2"), events
    onnx = make_aliked(tmp_path / "aliked.onnx")
    runtime = runtime_for(fake)
    runtime.logger = logger
    started = time.monotonic()
    with pytest.raises(ModelDataError, match=r"TensorRT 8\.6\.2 cannot build it: .*no DeformConv "
                       r"importer.*node block2/dcn") as caught:
        runtime.compile_engine(onnx, config(tmp_path, "aliked", input_shapes=ALIKED))
    assert "export without DeformConv" in caught.value.hint and "10.1" in caught.value.hint
    assert time.monotonic() - started < 2
    assert not [c for c in fake.calls if c[0] in ("builder", "parse_from_file")]


def test_the_stand_in_parser_of_8_6_fails_deformconv_as_the_real_one(tmp_path):
    """What the early refusal saves: the stand-in's 8.6 parser fails it with onnx-tensorrt
    8.6-GA's "Plugin not found" (builtin_op_importers.cpp:5405), plugins or not."""
    fake = FakeTensorRT("8.6.2")
    logger = process_logger(fake.module)  # registers the plugins too: 8.6 still has no importer
    network = fake.module.Builder(logger).create_network(1)
    parser = fake.module.OnnxParser(network, logger)
    assert not parser.parse_from_file(str(make_aliked(tmp_path / "aliked.onnx")))
    assert "Plugin not found" in parser.get_error(0).desc()


def test_aliked_builds_on_10_3_and_its_engine_loads_in_a_fresh_process(tmp_path):
    """10.x imports DeformConv as the ModulatedDeformConv2d plugin: the plugin library is
    registered before the parse, and again in a process that only deserializes (a fleet
    candidate's check, a warm boot's accuracy check)."""
    onnx = make_aliked(tmp_path / "aliked.onnx")
    cfg = config(tmp_path, "aliked", input_shapes=ALIKED, verify="infer")
    builder = FakeTensorRT("10.3.0")
    entry = runtime_for(builder).compile_engine(onnx, cfg)
    inits = [c for c in builder.calls if c[0] == "init_libnvinfer_plugins"]
    assert inits == [("init_libnvinfer_plugins", "")]  # once, before the parse
    assert builder.calls.index(inits[0]) < builder.calls.index(("parse_from_file", str(onnx)))
    fresh = FakeTensorRT("10.3.0")  # another process: nothing registered yet
    runtime_for(fresh).verify_artifact(entry.engine_path, inspect_model(onnx), cfg)
    assert ("init_libnvinfer_plugins", "") in fresh.calls


def test_without_the_plugin_library_the_10_3_parse_and_load_fail_as_the_real_ones(tmp_path):
    """The stand-in's behaviour that the fix relies on, with the real messages."""
    fake = FakeTensorRT("10.3.0")
    logger = fake.module.ILogger  # any logger: nothing registers the plugins here
    network = fake.module.Builder(logger).create_network(0)
    parser = fake.module.OnnxParser(network, logger)
    assert not parser.parse_from_file(str(make_aliked(tmp_path / "aliked.onnx")))
    assert parser.get_error(0).desc() == ("ModulatedDeformConv2d plugin was not found in the "
                                          "plugin registry!")


@pytest.mark.parametrize("version", RELEASES)
def test_aliked_exported_without_deformconv_builds_on_both(tmp_path, version):
    fake = FakeTensorRT(version)
    onnx = make_aliked(tmp_path / "aliked.onnx", deform=False)
    entry = runtime_for(fake).compile_engine(onnx, config(tmp_path, "aliked", input_shapes=ALIKED,
                                                          verify="infer"))
    assert entry.engine_path.is_file()


@pytest.mark.parametrize("version", RELEASES)
def test_aliked_with_a_top_k_of_4096_is_refused_before_the_build(tmp_path, version):
    fake = FakeTensorRT(version)
    onnx = make_aliked(tmp_path / "aliked.onnx", deform=False, top_k=4096, size=64)
    shapes = {None: InputProfile.fixed((1, 3, 64, 64))}
    with pytest.raises(ModelDataError, match=r"TopK K=4096.*3840"):
        runtime_for(fake).compile_engine(onnx, config(tmp_path, "aliked", input_shapes=shapes))
    assert not [c for c in fake.calls if c[0] == "builder"]


def test_a_top_k_larger_than_the_min_score_map_is_refused(tmp_path):
    fake = FakeTensorRT("10.3.0")
    onnx = make_aliked(tmp_path / "aliked.onnx", deform=False, top_k=512, dynamic=True)
    shapes = {None: InputProfile((1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64))}
    with pytest.raises(ModelDataError, match=r"K=512.*only 256 elements at the profile's min"):
        runtime_for(fake).compile_engine(onnx, config(tmp_path, "aliked", input_shapes=shapes))


@pytest.mark.parametrize("version", RELEASES)
def test_lightglue_with_nonzero_matches_builds_and_warms_up(tmp_path, version):
    """``matches`` has -1 dims: the warm-up installs an output allocator and reads the shape
    TensorRT notifies (it used to size a buffer by get_max_output_size and ignore it)."""
    fake = FakeTensorRT(version)
    onnx = make_lightglue(tmp_path / "lightglue.onnx")
    runtime_for(fake).compile_engine(onnx, config(tmp_path, "lightglue", input_shapes=MATCHER,
                                                  verify="infer"))
    assert ("IOutputAllocator", "notify_shape") in fake.touched
    assert not [c for c in fake.calls if c[0] in ("enqueue_error", "swallowed")]


@pytest.mark.parametrize("version", RELEASES)
def test_dinov2_below_opset_17_keeps_its_layernorms_in_fp32_by_default(tmp_path, version, events):
    """The decomposed LayerNorm (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div) is constrained to
    FP32 with PREFER_PRECISION_CONSTRAINTS, and TensorRT has nothing to warn about."""
    logger, log = events
    fake = FakeTensorRT(version)
    runtime = runtime_for(fake)
    runtime.logger = logger
    runtime.compile_engine(make_dinov2(tmp_path / "dinov2.onnx", opset=14),
                           config(tmp_path, "dinov2"))
    assert "PREFER_PRECISION_CONSTRAINTS" in fake.flags_built()
    kept = _kinds(log, "c10.engine.tensorrt.keep_fp32")
    assert kept and kept[0].kv["layers"][:2] == ["blocks.0/norm1/ReduceMean", "blocks.0/norm1/Sub"]
    assert len(kept[0].kv["layers"]) == 14  # two LayerNorms of seven layers
    assert not [r for r in _kinds(log, "c10.engine.tensorrt.warning") if "layernorm" in r.msg]


def test_dinov2_layernorm_left_in_fp16_surfaces_tensorrts_warning(tmp_path, events):
    """``keep_fp32: []``: TensorRT's overflow warning is a WARNING event naming the model (it
    was a DEBUG event, seen only under --debug)."""
    logger, log = events
    fake = FakeTensorRT("10.3.0")
    runtime = runtime_for(fake)
    runtime.logger = logger
    runtime.compile_engine(make_dinov2(tmp_path / "dinov2.onnx", opset=14),
                           config(tmp_path, "dinov2", keep_fp32=()))
    warned = [r for r in _kinds(log, "c10.engine.tensorrt.warning") if "layernorm" in r.msg]
    assert warned and warned[0].levelno == logging.WARNING
    assert warned[0].kv["model_name"] == "dinov2" and warned[0].msg.startswith("dinov2: ")
    assert "PREFER_PRECISION_CONSTRAINTS" not in fake.flags_built()


def test_named_layers_and_op_types_can_be_kept_in_fp32(tmp_path, events):
    logger, log = events
    fake = FakeTensorRT("10.3.0")
    runtime = runtime_for(fake)
    runtime.logger = logger
    runtime.compile_engine(make_dinov2(tmp_path / "dinov2.onnx"),
                           config(tmp_path, "dinov2", keep_fp32=("Softmax", "blocks.0/mlp/fc2")))
    assert _kinds(log, "c10.engine.tensorrt.keep_fp32")[0].kv["layers"] == [
        "blocks.0/attn/softmax", "blocks.0/mlp/fc2"]


@pytest.mark.parametrize(("version", "noted"), [("8.6.2", False), ("10.3.0", True)])
def test_int8_calibration_says_it_is_deprecated_from_10_1(tmp_path, version, noted, events):
    """``int8_calibrator`` is "Deprecated in TensorRT 10.1. Superseded by explicit quantization"
    (TensorRT v10.3.0 python/src/infer/pyCore.cpp:1428-1433) and gone in TensorRT 11."""
    import numpy as np

    logger, log = events
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"batch_{i}.npy", np.zeros((1, 3, 16, 16), np.float32))
    runtime = runtime_for(FakeTensorRT(version))
    runtime.logger = logger
    runtime.compile_engine(make_aliked(tmp_path / "aliked.onnx", deform=False),
                           config(tmp_path, "aliked", PrecisionMode.INT8, input_shapes=ALIKED,
                                  calibration_dir=folder))
    said = _kinds(log, "c10.engine.tensorrt.deprecated")
    assert bool(said) is noted
    assert not said or "removed in TensorRT 11" in said[0].msg


def test_keep_fp32_in_the_config_reaches_the_build_and_its_fingerprint(tmp_path):
    from app.config import BackboneConfig, BackboneSpec
    from app.phases import make_plan
    from app.values import KEEP_FP32_DEFAULT
    from tests.backends.tensorrt.helpers import host
    from tests.helpers import make_request

    onnx = make_dinov2(tmp_path / "dinov2.onnx", opset=14)
    runtime = runtime_for(FakeTensorRT("10.3.0"))
    plans = {}
    for keep in (None, ["Softmax"], []):
        spec = BackboneSpec.from_config(
            BackboneConfig(model_name="dinov2", onnx_path=str(onnx), keep_fp32=keep))
        request = make_request((spec,), tmp_path, host("10.3.0", cuda_device=0))
        plans[str(keep)] = make_plan(runtime, spec, request, None).build_config
    assert plans["None"].keep_fp32 == KEEP_FP32_DEFAULT == ("layernorm",)
    assert plans["['Softmax']"].keep_fp32 == ("Softmax",) and plans["[]"].keep_fp32 == ()
    assert "keep_fp32" not in plans["None"].fingerprint_fields()  # old records stay valid
    assert plans["[]"].fingerprint_fields()["keep_fp32"] == []
