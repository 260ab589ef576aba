"""Whether the asked precision took effect: read from ONNX Runtime's profile of one real run and
from TensorRT's engine inspector (the stand-in), and enforced by `engine-init run`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from app import BackboneSpec, EngineCompiler
from app.backends.onnxruntime import OnnxRuntimeBackend
from app.cache.record import read_record
from app.errors import EngineBuildError
from app.values import PrecisionMode
from app.verify.precision import ort_precision_in_effect, trt_precision_in_effect
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import host, runtime_for
from tests.helpers import cli, json_events, make_request, write_job_config
from tests.verify.models import build_ort, make_recurrent, write_batches

IMAGE = {"image": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)}


def test_an_int8_build_runs_its_convolutions_in_int8(tmp_path, corpus):
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.INT8,
                    corpus["calibration"] / "aliked")
    effect = ort_precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.compute_nodes, effect.in_precision, effect.took_effect) == (2, 2, True)
    assert effect.describe() == "2 of 2 compute nodes run in int8"
    assert effect.ops.get("QLinearConv") == 2


def test_an_fp32_artifact_asked_as_int8_did_not_take_effect(tmp_path, corpus):
    """What a silently ignored INT8 flag looks like: accurate, and nothing in int8."""
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.FP32)
    effect = ort_precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.in_precision, effect.took_effect) == (0, False)
    assert effect.as_dict()["took_effect"] is False and effect.compute_nodes == 2
    fp32 = ort_precision_in_effect(engine, IMAGE, "fp32", "aliked")
    assert fp32.took_effect and fp32.describe() == "2 compute nodes in float32"


def test_a_file_that_is_no_artifact_is_a_build_error(tmp_path):
    junk = tmp_path / "x.ort"
    junk.write_bytes(b"junk")
    with pytest.raises(EngineBuildError, match=r"cannot profile x\.ort"):
        ort_precision_in_effect(junk, IMAGE, "int8", "aliked")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ort"]  # no profile left behind


# -- TensorRT: the engine inspector's JSON ------------------------------------------------------
def _layer(kind, fmt):
    return {"Name": kind, "LayerType": kind, "Inputs": [{"Name": "t", "Format/Datatype": fmt}]}


def test_tensorrt_layers_are_counted_in_their_first_inputs_format():
    info = json.dumps({"Layers": [
        _layer("CaskConvolution", "Four wide channel vectorized row major Int8 format"),
        _layer("CaskGemmMatrixMultiply", "Half"),  # the short form, without a context
        _layer("gemm", "Row major linear FP32"),
        _layer("PointWiseV2", "Int8"), _layer("Reformat", "Float")]})
    effect = trt_precision_in_effect(info, "int8")
    assert effect is not None
    assert (effect.compute_nodes, effect.in_precision) == (3, 1)
    assert effect.ran == {"fp16": 1, "fp32": 1, "int8": 1} and effect.ops["Reformat"] == 1
    assert effect.what_ran() == "1 in fp16, 1 in fp32, 1 in int8"


def test_an_engine_with_layer_names_only_cannot_say():
    assert trt_precision_in_effect(json.dumps({"Layers": ["conv1", "relu1"]}), "fp16") is None
    assert trt_precision_in_effect("conv1\nrelu1", "fp16") is None


# -- in `engine-init run` (real ONNX Runtime builds) ---------------------------------------------
def _kinds(proc, kind):
    return [e["kv"] for e in json_events(proc.stderr) if e["kind"] == kind]


def _recurrent_job(tmp_path, corpus, projected):
    (tmp_path / "models").mkdir()
    onnx = make_recurrent(tmp_path / "models" / "lstm.onnx", projected)
    write_batches(tmp_path / "calibration" / "lstm", (6, 1, 8))
    return write_job_config(tmp_path, corpus, calibration_path=str(tmp_path / "calibration"),
                            backbones=[{"model_name": "lstm", "onnx_path": str(onnx),
                                        "precision": "int8"}])


def test_run_records_that_int8_took_effect_and_a_warm_boot_reports_it(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)  # aliked int8, the others fp32
    cold = cli("--config", str(job), "--log-format", "json", "run")
    assert cold.returncode == 0, cold.stderr
    [checked] = _kinds(cold, "c10.engine.precision.checked")  # fp32 builds are not checked
    assert checked["model_name"] == "aliked" and checked["ran"] == {"int8": 2}
    record = read_record(next((tmp_path / "cache").glob("aliked__*.ort"))).record
    assert record is not None and record.precision_in_effect is not None
    assert record.precision_in_effect["in_precision"] == record.precision_in_effect["compute_nodes"] == 2
    dino = read_record(next((tmp_path / "cache").glob("dinov2_vpr__*.ort"))).record
    assert dino is not None and dino.precision_in_effect is None

    warm = cli("--config", str(job), "--log-format", "json", "run")
    assert warm.returncode == 0 and _kinds(warm, "c10.engine.precision.checked") == []
    items = json.loads((tmp_path / "run" / "ready.json").read_text())["engines"]
    aliked = next(e for e in items if e["model_name"] == "aliked")
    assert aliked["outcome"] == "reused" and aliked["precision_in_effect"]["took_effect"]
    assert all("precision_in_effect" not in e for e in items if e["model_name"] != "aliked")


def test_int8_that_quantizes_no_compute_node_is_exit_70_and_publishes_nothing(tmp_path, corpus):
    job = _recurrent_job(tmp_path, corpus, projected=False)
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 70, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("engine-init: error:")]
    assert error == ["engine-init: error: lstm: int8 was asked, but 0 of 1 compute nodes run in "
                     "int8 (1 in fp32) (hint: set lstm's precision to one that onnxruntime runs "
                     "it in (fp32))"]
    [ignored] = _kinds(proc, "c10.engine.precision.ignored")
    assert ignored["ops"] == {"LSTM": 1} and ignored["took_effect"] is False
    assert "Traceback" not in proc.stderr
    assert list((tmp_path / "cache").glob("lstm*")) == []
    assert not (tmp_path / "run" / "ready.json").exists()
    # verify: none asks for no check of the built artifact, this one included.
    job.write_text(job.read_text().replace("precision: int8", "precision: int8\n  verify: none"))
    unchecked = cli("--config", str(job), "--log-format", "json", "run")
    assert unchecked.returncode == 0, unchecked.stderr
    assert _kinds(unchecked, "c10.engine.precision.ignored") == []


def test_int8_that_quantizes_some_compute_nodes_warns_and_goes_on(tmp_path, corpus):
    job = _recurrent_job(tmp_path, corpus, projected=True)
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 0, proc.stderr
    [partial] = [e for e in json_events(proc.stderr) if e["kind"] == "c10.engine.precision.partial"]
    assert partial["level"] == "WARNING"
    assert partial["msg"] == "lstm: 1 of 2 compute nodes run in int8 (1 in fp32, 1 in int8)"
    record = read_record(next((tmp_path / "cache").glob("lstm__*.ort"))).record
    assert record is not None and record.precision_in_effect["ran"] == {"fp32": 1, "int8": 1}


# -- through the compiler, with runtimes that do not do what was asked ---------------------------
class IgnoresInt8(OnnxRuntimeBackend):
    """A stand-in for a backend that silently builds fp32 when asked int8 (an ignored flag)."""

    def compile_engine(self, model_path, build_config):  # type: ignore[no-untyped-def]
        return super().compile_engine(model_path, replace(build_config, precision=PrecisionMode.FP32))


def _aliked_int8(corpus, cache, **kw):
    spec = BackboneSpec("aliked", corpus["aliked"], (1, 3, 64, 64))
    return make_request((spec,), cache, precision=PrecisionMode.INT8,
                        calibration_path=corpus["calibration"], **kw)


def test_a_stand_in_runtime_that_ignores_int8_is_refused_and_publishes_nothing(tmp_path, corpus, events):
    logger, log = events
    with pytest.raises(EngineBuildError, match=r"aliked: int8 was asked, but 0 of 2 compute nodes"):
        EngineCompiler(IgnoresInt8(), logger).compile_engines_for_corpus(
            _aliked_int8(corpus, tmp_path))
    assert log.kv("c10.engine.precision.ignored")[0]["ran"] == {"fp32": 2}
    assert list(tmp_path.glob("aliked*")) == []  # engine, sidecar and pending record
    # The real backend, asked the same: it took effect.
    [result] = EngineCompiler(OnnxRuntimeBackend(), logger).compile_engines_for_corpus(
        _aliked_int8(corpus, tmp_path))
    assert result.precision_in_effect is not None and result.precision_in_effect["took_effect"]


@pytest.mark.parametrize(("layer_format", "took_effect"), [(None, True), ("Half", False)])
def test_tensorrt_stand_in_int8_checked_by_the_engine_inspector(tmp_path, corpus, events,
                                                                layer_format, took_effect):
    """FakeTensorRT stands in for TensorRT: with the INT8 flag its compute layers report Int8,
    unless ``layer_format`` says that TensorRT chose FP16 kernels everywhere."""
    logger, log = events
    fake = FakeTensorRT("10.3.0")
    fake.layer_format = layer_format
    compiler = EngineCompiler(runtime_for(fake), logger)
    request = _aliked_int8(corpus, tmp_path, host=host("10.3.0"))
    if took_effect:
        [result] = compiler.compile_engines_for_corpus(request)
        record = read_record(result.entry.engine_path).record
        assert record is not None and record.precision_in_effect == result.precision_in_effect
        assert result.precision_in_effect["ran"] == {"int8": 2}  # type: ignore[index]
        assert log.kv("c10.engine.precision.checked")
        return
    with pytest.raises(EngineBuildError, match=r"0 of 2 compute nodes run in int8 \(2 in fp16\)"):
        compiler.compile_engines_for_corpus(request)
    assert list(tmp_path.glob("aliked*")) == []
