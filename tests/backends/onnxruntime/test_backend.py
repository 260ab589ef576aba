"""The ONNX Runtime backend on real generated models: real compiles, real quantization."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app import (
    BuildConfig,
    CalibrationCacheError,
    EngineBuildError,
    EngineCompiler,
    InputProfile,
    ModelDataError,
    OrtFilenameSchema,
    PrecisionMode,
    Sha256Sidecar,
)
from app.backends.onnxruntime import OnnxRuntimeBackend
from tests.helpers import make_request


def _cfg(tmp_path: Path, name: str, precision=PrecisionMode.FP32, **kw) -> BuildConfig:
    backend = OnnxRuntimeBackend()
    return BuildConfig(precision=precision, model_name=name,
                       engine_path=tmp_path / backend.artifact_name(name, precision), **kw)


def _load(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.load_model_format", "ORT")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_fp32_compile_matches_the_onnx_model(tmp_path, corpus):
    cfg = _cfg(tmp_path, "dinov2_vpr", input_shapes={None: InputProfile.fixed((1, 3, 32, 32))})
    entry = OnnxRuntimeBackend().compile_engine(corpus["dinov2_vpr"], cfg)
    assert Sha256Sidecar.verify(entry.engine_path)
    parsed: OrtFilenameSchema = OrtFilenameSchema.parse(entry.engine_path.name)
    assert parsed.ort == ".".join(ort.__version__.split(".")[:2])
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    reference = ort.InferenceSession(str(corpus["dinov2_vpr"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_load(entry.engine_path).run(None, {"pixels": x})[0],
                               reference.run(None, {"pixels": x})[0], rtol=1e-4, atol=1e-5)


def test_dynamic_matcher_compiles_and_runs_across_its_range(tmp_path, corpus):
    profile = InputProfile((1, 1, 64), (1, 16, 64), (1, 64, 64))
    cfg = _cfg(tmp_path, "lightglue", input_shapes={"desc0": profile, "desc1": profile})
    entry = OnnxRuntimeBackend().compile_engine(corpus["lightglue"], cfg)
    session = _load(entry.engine_path)
    for n, m in ((1, 64), (37, 5)):
        out = session.run(None, {"desc0": np.ones((1, n, 64), np.float32),
                                 "desc1": np.ones((1, m, 64), np.float32)})[0]
        assert out.shape == (1, n, m)


def test_int8_quantizes_from_calibration_batches(tmp_path, corpus):
    cfg = _cfg(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked",
               verify="infer")
    entry = OnnxRuntimeBackend().compile_engine(corpus["aliked"], cfg)
    session = _load(entry.engine_path)
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    got = session.run(None, {"image": x})[0]
    want = ort.InferenceSession(str(corpus["aliked"]), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    assert np.abs(got - want).max() < 0.1  # quantized, but close
    assert entry.precision is PrecisionMode.INT8


def test_int8_two_input_model_uses_npz_batches(tmp_path, corpus):
    profile = InputProfile((1, 1, 64), (1, 128, 64), (1, 256, 64))
    cfg = _cfg(tmp_path, "lightglue", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "lightglue",
               input_shapes={"desc0": profile, "desc1": profile})
    assert Sha256Sidecar.verify(OnnxRuntimeBackend().compile_engine(corpus["lightglue"], cfg).engine_path)


def test_int8_without_data_is_a_calibration_error(tmp_path, corpus):
    cfg = _cfg(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=tmp_path / "none")
    with pytest.raises(CalibrationCacheError, match="calibration"):
        OnnxRuntimeBackend().compile_engine(corpus["aliked"], cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("writer", "words"), [
    (lambda f: np.save(f / "b.npy", np.zeros((1, 3, 32, 32), np.float32)), ["shape"]),
    (lambda f: np.save(f / "b.npy", np.zeros((1, 3, 64, 64), np.float64)), ["float64", "float32"]),
    (lambda f: np.savez(f / "b.npz", wrong=np.zeros((1, 3, 64, 64), np.float32)), ["wrong", "image"]),
    (lambda f: (f / "b.npy").write_bytes(b"not numpy"), ["unreadable"]),
])
def test_bad_calibration_batches_are_model_data_errors(tmp_path, corpus, writer, words):
    folder = tmp_path / "calib"
    folder.mkdir()
    writer(folder)
    cfg = _cfg(tmp_path / "out", "aliked", PrecisionMode.INT8, calibration_dir=folder)
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelDataError) as caught:
        OnnxRuntimeBackend().compile_engine(corpus["aliked"], cfg)
    for word in words:
        assert word in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_fp16_compiles_or_fails_clearly(tmp_path, corpus):
    cfg = _cfg(tmp_path, "aliked", PrecisionMode.FP16)
    try:
        entry = OnnxRuntimeBackend().compile_engine(corpus["aliked"], cfg)
    except EngineBuildError as exc:
        assert "fp16" in str(exc) and "fp32 or int8" in exc.hint
        assert list(tmp_path.iterdir()) == []
    else:
        assert Sha256Sidecar.verify(entry.engine_path)


@pytest.mark.parametrize(("content", "words"), [
    (b"", ["no ONNX graph"]),
    (b"\x08\x07\x12\x05hello\xff\xff\xff", ["ONNX"]),
    (None, ["ONNX"]),  # truncated real model
])
def test_broken_onnx_files_are_model_data_errors(tmp_path, corpus, content, words):
    model = tmp_path / "m.onnx"
    model.write_bytes(content if content is not None else corpus["dinov2_vpr"].read_bytes()[:300])
    with pytest.raises(ModelDataError) as caught:
        OnnxRuntimeBackend().compile_engine(model, _cfg(tmp_path, "m"))
    assert any(w in str(caught.value) for w in words)


def test_shape_contradicting_the_model_is_named(tmp_path, corpus):
    cfg = _cfg(tmp_path, "dinov2_vpr", input_shapes={None: InputProfile.fixed((1, 3, 64, 64))})
    with pytest.raises(ModelDataError, match="dimension 2 is fixed to 32"):
        OnnxRuntimeBackend().compile_engine(corpus["dinov2_vpr"], cfg)


def test_dynamic_inputs_left_open_are_named(tmp_path, corpus):
    with pytest.raises(ModelDataError, match=r"desc0.*dynamic"):
        OnnxRuntimeBackend().compile_engine(corpus["lightglue"], _cfg(tmp_path, "lightglue"))


def test_through_the_compiler_second_run_reuses(tmp_path, corpus, specs, events):
    backend = OnnxRuntimeBackend()
    from dataclasses import replace

    from app.values import InputProfile as P

    dyn = P((1, 1, 64), (1, 8, 64), (1, 32, 64))
    specs = (specs[0], replace(specs[1], input_shapes={"desc0": dyn, "desc1": dyn}), specs[2])
    request = make_request(specs, tmp_path / "cache", precision=PrecisionMode.FP32)
    first = EngineCompiler(backend, events[0]).compile_engines_for_corpus(request)
    second = EngineCompiler(backend, events[0]).compile_engines_for_corpus(request)
    assert [r.outcome.value for r in first] == ["built"] * 3
    assert [r.outcome.value for r in second] == ["reused"] * 3
    assert all(r.entry.engine_path.suffix == ".ort" for r in first)
    shutil.rmtree(tmp_path / "cache")


def test_int8_from_a_read_only_models_folder(tmp_path, corpus):
    """/models is mounted read-only in the container: quantization must not write beside it."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(corpus["aliked"], models / "aliked.onnx")
    models.chmod(0o555)
    try:
        cfg = _cfg(tmp_path, "aliked", PrecisionMode.INT8, calibration_dir=corpus["calibration"] / "aliked")
        OnnxRuntimeBackend().compile_engine(models / "aliked.onnx", cfg)
        assert sorted(p.name for p in models.iterdir()) == ["aliked.onnx"]
    finally:
        models.chmod(0o755)
