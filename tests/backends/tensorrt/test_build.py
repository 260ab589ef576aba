"""Whether a ``dla_core`` build really uses the DLA: the layers TensorRT's builder config places
on it and says it can run, through the compiler with the TensorRT stand-in (FakeTensorRT, whose
``not_on_dla`` names the ONNX ops a DLA lacks). The demo's aliked: Conv, Relu, Conv, Sigmoid."""

from __future__ import annotations

import pytest

from app import BackboneSpec, EngineCompiler
from app.cache.record import read_record
from app.cli import exit_code_for
from app.errors import EngineBuildError
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import host, runtime_for
from tests.helpers import make_request


def _compile(fake, corpus, tmp_path, logger):  # type: ignore[no-untyped-def]
    fake.dla_cores = 2
    runtime = runtime_for(fake)
    runtime.logger = logger
    spec = BackboneSpec("aliked", corpus["aliked"], (1, 3, 64, 64), dla_core=1)
    return EngineCompiler(runtime, logger).compile_engines_for_corpus(
        make_request((spec,), tmp_path, host=host(fake.__version__)))


@pytest.mark.parametrize(("not_on_dla", "kind", "level", "msg"), [
    (set(), "c10.engine.dla.checked", "INFO", "aliked: 4 of 4 layers on DLA core 1"),
    ({"Sigmoid"}, "c10.engine.dla.partial", "WARNING",
     "aliked: 3 of 4 layers on DLA core 1, the other 1 on the GPU"),
])
def test_tensorrt_stand_in_dla_placement_is_reported_and_recorded(tmp_path, corpus, events,
                                                                  not_on_dla, kind, level, msg):
    logger, log = events
    fake = FakeTensorRT("10.3.0")
    fake.not_on_dla = not_on_dla
    [result] = _compile(fake, corpus, tmp_path, logger)
    [event] = log.of(kind)
    assert (event.levelname, event.getMessage()) == (level, msg)
    placed = {"dla_core": 1, "layers": 4, "on_dla": 4 - len(not_on_dla)}
    assert result.precision_in_effect is not None and result.precision_in_effect["dla"] == placed
    record = read_record(result.entry.engine_path).record
    assert record is not None and record.precision_in_effect == result.precision_in_effect


def test_tensorrt_stand_in_dla_running_no_layer_is_exit_70_and_publishes_nothing(tmp_path, corpus,
                                                                                 events):
    """GPU fallback would build a GPU engine under a DLA engine's name: refused before building."""
    logger, log = events
    fake = FakeTensorRT("8.6.2")
    fake.not_on_dla = {"Conv", "Relu", "Sigmoid"}
    with pytest.raises(EngineBuildError) as caught:
        _compile(fake, corpus, tmp_path, logger)
    assert str(caught.value) == ("aliked: dla_core 1 was asked, but TensorRT can run none of its "
                                 "4 layers on DLA core 1: all would run on the GPU")
    assert exit_code_for(caught.value) == 70
    assert log.kv("c10.engine.dla.ignored") == [{"model_name": "aliked", "dla_core": 1,
                                                 "layers": 4, "on_dla": 0}]
    assert not [c for c in fake.calls if c[0] == "build"]
    assert list(tmp_path.glob("aliked*")) == []  # no engine, sidecar or pending record
