"""ONNX Runtime's sessions: the runner of the backend's artifact, and the precision in effect
read from ONNX Runtime's profile of one real run."""

from __future__ import annotations

import numpy as np
import pytest

from app.backends.base import EngineRunner, PlainRuntimeAdapter
from app.backends.onnxruntime import OnnxRuntimeBackend
from app.backends.onnxruntime.sessions import precision_in_effect
from app.errors import EngineBuildError
from app.values import BuildConfig, HostCapabilities, PrecisionMode
from tests.verify.models import build_ort

IMAGE = {"image": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)}


class ncnn:  # lower case: its adapter names its engines after the class
    """A caller's plain runtime (``compile_engine`` only)."""

    def compile_engine(self, model_path, build_config):  # type: ignore[no-untyped-def]
        raise AssertionError("not built here")


def test_an_int8_build_runs_its_convolutions_in_int8(tmp_path, corpus):
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.INT8,
                    corpus["calibration"] / "aliked")
    effect = precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.compute_nodes, effect.in_precision, effect.took_effect) == (2, 2, True)
    assert effect.describe() == "2 of 2 compute nodes run in int8"
    assert effect.ops.get("QLinearConv") == 2


def test_an_fp32_artifact_asked_as_int8_did_not_take_effect(tmp_path, corpus):
    """What a silently ignored INT8 flag looks like: accurate, and nothing in int8."""
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.FP32)
    effect = precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.in_precision, effect.took_effect) == (0, False)
    assert effect.as_dict()["took_effect"] is False and effect.compute_nodes == 2
    fp32 = precision_in_effect(engine, IMAGE, "fp32", "aliked")
    assert fp32.took_effect and fp32.describe() == "2 compute nodes in float32"


def test_a_file_that_is_no_artifact_is_a_build_error(tmp_path):
    junk = tmp_path / "x.ort"
    junk.write_bytes(b"junk")
    with pytest.raises(EngineBuildError, match=r"cannot profile x\.ort"):
        precision_in_effect(junk, IMAGE, "int8", "aliked")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ort"]  # no profile left behind


def test_the_backend_opens_the_runner_of_its_artifact(tmp_path, corpus):
    """The gate asks the runtime for a runner (never a backend name); a plain runtime has
    none to give."""
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.FP32)
    config = BuildConfig(PrecisionMode.FP32, "aliked", engine)
    runner = OnnxRuntimeBackend().open_runner(engine, config)
    assert isinstance(runner, EngineRunner)
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert runner.run({"image": x})["scores"].shape == (1, 1, 64, 64)
    runner.close()
    with pytest.raises(Exception, match="cannot run ncnn engines"):
        PlainRuntimeAdapter(ncnn(), HostCapabilities(0, "none", "none")).open_runner(engine, config)


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero"])
def test_a_path_onnx_runtime_would_open_is_checked_first(tmp_path, kind):
    """ONNX Runtime opens a model path itself, blocking: the safe reader looks at it first, so
    a FIFO or a device there is a clear error, never a hang."""
    from app.backends.onnxruntime.sessions import open_engine, open_reference
    from app.errors import ModelDataError
    from tests.helpers import plant, within

    path = tmp_path / "m.ort"
    plant(path, kind, tmp_path / "outside")
    with pytest.raises(EngineBuildError, match=r"m\.ort does not load .*(FIFO|device)"):
        within(2, lambda: open_engine(path, "m"))
    with pytest.raises(ModelDataError, match=r"cannot run .*m\.ort .*(FIFO|device)"):
        within(2, lambda: open_reference(path, "m"))
