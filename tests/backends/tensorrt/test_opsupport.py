"""What a TensorRT release can import, known before a build: ``validate``, ``status`` and
``run`` in real processes whose ``tensorrt`` is the stand-in (TensorRT cannot run here), the
opset warning, the process logger and the plugin library registered once."""

from __future__ import annotations

import json

import onnx
import pytest

from app import EngineBuildError, PrecisionMode
from app.backends.tensorrt.api import process_logger
from app.backends.tensorrt.opsupport import check_model
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import config, runtime_for, start_job, write_job, write_standin_site
from tests.backends.tensorrt.networks import make_aliked, make_lightglue


def _job(tmp_path, version):
    onnx_path = make_aliked(tmp_path / "aliked.onnx")
    job = write_job(tmp_path, onnx_path)
    job.write_text(job.read_text().replace("[1, 3, 64, 64]", "[1, 3, 16, 16]"))
    return job, write_standin_site(tmp_path / "site", version)


@pytest.mark.parametrize("command", [("validate",), ("run",)])
def test_validate_and_run_refuse_deformconv_on_8_6_with_exit_65(tmp_path, command):
    job, site = _job(tmp_path, "8.6.2")
    proc = start_job(job, site, *command)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 65, err
    assert "TensorRT 8.6.2 cannot build it" in err and "DeformConv" in err
    assert "export without DeformConv" in err and "Traceback" not in err
    assert not list((tmp_path / "cache").glob("*.engine"))


def test_validate_passes_the_same_model_for_10_3(tmp_path):
    job, site = _job(tmp_path, "10.3.0")
    proc = start_job(job, site, "validate")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "config OK" in out


def test_status_shows_what_the_release_cannot_import(tmp_path):
    job, site = _job(tmp_path, "8.6.2")
    proc = start_job(job, site, "status", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (row,) = json.loads(out)["engines"]
    refused = [f for f in row["tensorrt_ops"] if f["refuse"]]
    assert refused[0]["op"] == "DeformConv" and refused[0]["node"] == "block2/dcn"
    proc = start_job(job, site, "status")
    out, _ = proc.communicate(timeout=60)
    assert "aliked: TensorRT 8.6.2 cannot build: " in out


def test_an_opset_above_what_8_6_documents_is_a_warning_not_a_refusal(tmp_path, events):
    logger, log = events
    model = onnx.load(str(make_lightglue(tmp_path / "lg17.onnx")))
    model.opset_import[0].version = 19
    onnx.save(model, str(tmp_path / "lg19.onnx"))
    (found,) = check_model(tmp_path / "lg19.onnx", "8.6.2")
    assert not found.refuse and "opset 19 is above the 17" in found.message
    assert check_model(tmp_path / "lg19.onnx", "10.3.0") == []
    # A version read from package metadata may lack the minor number: read as 10.0, never a crash.
    assert check_model(tmp_path / "lg19.onnx", "10") == []
    fake = FakeTensorRT("8.6.2")
    runtime = runtime_for(fake)
    runtime.logger = logger
    runtime.compile_engine(tmp_path / "lg19.onnx", config(
        tmp_path, "lightglue", input_shapes={"desc0": (s := _matcher()), "desc1": s}))
    assert [r.kind for r in log.records if r.kind == "c10.engine.tensorrt.opset"]


def _matcher():
    from app import InputProfile

    return InputProfile((1, 8, 16), (1, 16, 16), (1, 32, 16))


def test_the_plugin_library_is_registered_once_per_process(tmp_path, corpus):
    fake = FakeTensorRT("10.3.0")
    for name in ("a", "b"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path / name, "aliked"))
    assert [c for c in fake.calls if c[0] == "init_libnvinfer_plugins"] == [
        ("init_libnvinfer_plugins", "")]


def test_a_runtime_kept_alive_does_not_swallow_a_later_builds_errors(tmp_path, corpus):
    """TensorRT keeps one logger pointer while any Builder or Runtime lives (#1475): with a
    logger per build, the later build's errors went to the earlier one ("no error logged")."""
    fake = FakeTensorRT("10.3.0")
    kept = fake.module.Runtime(process_logger(fake.module))  # a runner held by its caller
    fake.fail_build = True
    with pytest.raises(EngineBuildError, match="out of memory while building"):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked",
                                                                   PrecisionMode.FP16))
    assert ("logger_ignored",) not in fake.calls and kept is not None


def test_a_fifo_where_the_model_should_be_is_refused_not_waited_on(tmp_path):
    import os
    import time

    from app import ModelDataError

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ModelDataError, match=r"cannot be read as an ONNX model.*FIFO"):
        check_model(fifo, "10.3.0")
    assert time.monotonic() - started < 1
