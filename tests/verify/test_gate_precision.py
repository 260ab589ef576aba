"""Whether the asked precision took effect, as the gate enforces it after a build
(:func:`app.verify.accuracy.enforce_precision`): through `engine-init run` with real ONNX Runtime
builds, and through the compiler with runtimes (a stand-in of TensorRT among them) that do
not do what was asked. The read-outs themselves: tests/backends/onnxruntime/test_sessions.py
and tests/backends/tensorrt/test_runtime_standin.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from app import BackboneSpec, EngineCompiler
from app.backends.onnxruntime import OnnxRuntimeBackend
from app.cache.record import read_record
from app.errors import EngineBuildError
from app.values import PrecisionMode
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import host, runtime_for
from tests.helpers import cli, json_events, make_request, write_job_config
from tests.verify.models import make_recurrent, write_batches


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


# -- what each TensorRT release can report of a transformer (Myelin) ---------------------------
def _dinov2_int8(tmp_path, version, events, gemm_format=None, tokens=False):
    from tests.backends.tensorrt.networks import make_dinov2

    logger, log = events
    fake = FakeTensorRT(version)
    fake.gemm_format = gemm_format
    onnx = make_dinov2(tmp_path / "models" / "dinov2.onnx", tokens=tokens)
    shape = (1, 4, 16) if tokens else (1, 3, 28, 28)
    write_batches(tmp_path / "calibration" / "dinov2", shape)
    (tmp_path / "cache").mkdir()
    request = make_request((BackboneSpec("dinov2", onnx, shape, verify="io"),),
                           tmp_path / "cache", host(version), PrecisionMode.INT8,
                           calibration_path=tmp_path / "calibration")
    return EngineCompiler(runtime_for(fake), logger).compile_engines_for_corpus(request), log


def test_int8_transformer_whose_myelin_gemms_stay_fp16_on_10_3_is_a_warning_not_exit_70(
        tmp_path, events):
    """Under implicit INT8, Myelin keeps GEMMs in FP16 where faster (NVIDIA/TensorRT#3784): the
    engine is good and published, with a warning naming Q/DQ for INT8 GEMMs."""
    [result], log = _dinov2_int8(tmp_path, "10.3.0", events, gemm_format="Half", tokens=True)
    effect = result.precision_in_effect
    assert effect is not None and effect["took_effect"] and effect["myelin_fp16"] == 7
    assert effect["ran"] == {"fp16": 7}
    [warned] = log.kv("c10.engine.precision.partial")
    assert warned["myelin_fp16"] == 7


def test_int8_transformer_on_8_6_is_judged_by_what_the_inspector_shows(tmp_path, events):
    """8.6 shows the transformer as one Myelin ForeignNode: the patch embedding alone is
    counted, and the record says one region could not be inspected."""
    [result], log = _dinov2_int8(tmp_path, "8.6.2", events)
    effect = result.precision_in_effect
    assert effect is not None and effect["compute_nodes"] == 1 and effect["not_inspectable"] == 1
    assert log.kv("c10.engine.precision.partial")
