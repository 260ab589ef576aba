"""TensorRTRuntime.verify_artifact (the on-robot check of a fleet candidate), driven through the
recording stand-in FakeTensorRT (no TensorRT here): an engine built for the model passes, an
engine that does not deserialize and an engine of another model are refused with the reason."""

from __future__ import annotations

import pytest

from app import EngineBuildError, InputProfile, PrecisionMode
from app.backends.onnx_model import inspect_model
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import VERSIONS, config, runtime_for


@pytest.fixture(params=VERSIONS)
def fake(request):
    with FakeTensorRT(request.param) as module:
        yield module


def test_a_candidate_is_checked_as_a_fresh_build_is(fake, tmp_path, corpus):
    shape = {None: InputProfile.fixed((1, 3, 32, 32))}
    cfg = config(tmp_path, "dinov2_vpr", PrecisionMode.FP32, input_shapes=shape)
    entry = runtime_for(fake).compile_engine(corpus["dinov2_vpr"], cfg)
    engine = entry.engine_path
    runtime_for(fake).verify_artifact(engine, inspect_model(corpus["dinov2_vpr"]), cfg)  # passes: no error
    fake.corrupt_engine = True  # TensorRT's answer to bytes it cannot read: None and a log line
    with pytest.raises(EngineBuildError, match=r"does not deserialize: .*Magic tag does not match"):
        runtime_for(fake).verify_artifact(engine, inspect_model(corpus["dinov2_vpr"]), cfg)
    fake.corrupt_engine = False
    other = config(tmp_path, "aliked", PrecisionMode.FP32,
                   input_shapes={None: InputProfile.fixed((1, 3, 64, 64))})
    with pytest.raises(EngineBuildError, match="does not match"):
        runtime_for(fake).verify_artifact(engine, inspect_model(corpus["aliked"]), other)


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero"])
def test_a_candidate_that_is_no_file_is_refused_at_once(fake, tmp_path, corpus, kind):
    from app.cache.fsread import UnsafeFileError
    from tests.helpers import plant, within

    shape = {None: InputProfile.fixed((1, 3, 32, 32))}
    cfg = config(tmp_path, "dinov2_vpr", PrecisionMode.FP32, input_shapes=shape)
    engine = tmp_path / "candidate.engine"
    plant(engine, kind, tmp_path / "outside")
    model = inspect_model(corpus["dinov2_vpr"])
    with pytest.raises(UnsafeFileError, match=r"FIFO|link"):  # a link is not followed
        within(2, lambda: runtime_for(fake).verify_artifact(engine, model, cfg))
