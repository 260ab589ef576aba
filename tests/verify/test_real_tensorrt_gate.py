"""The accuracy gate on a real TensorRT engine: build the demo models with the TensorRT backend
and check them through TrtRunner and cuda-python's device buffers. Runs on a Jetson (or any
machine with TensorRT, cuda-python and a GPU); skipped with the reason elsewhere."""

from __future__ import annotations

import pytest

from app import BuildConfig, InputProfile, PrecisionMode
from tests.helpers import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()

pytestmark = [pytest.mark.tensorrt,
              pytest.mark.skipif(REASON is not None, reason=REASON or "")]


# fp32 included: the backend clears BuilderFlag.TF32 for fp32 builds, so the fp32 bound (which
# TF32's 10-bit mantissas would break) holds.
@pytest.mark.parametrize("precision", list(PrecisionMode))
def test_real_engines_pass_their_precision_default(tmp_path, corpus, precision):
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host
    from app.verify.accuracy import check_accuracy
    from app.verify.runners import open_runner

    runtime = TensorRTRuntime(probe_host(need_gpu=True).capabilities)
    shapes: dict[str | None, InputProfile] = {None: InputProfile.fixed((1, 3, 64, 64))}
    cfg = BuildConfig(precision=precision, model_name="aliked", cache_root=tmp_path,
                      engine_path=tmp_path / runtime.artifact_name("aliked", precision),
                      input_shapes=shapes, workspace_mb=256,
                      calibration_dir=corpus["calibration"] / "aliked")
    entry = runtime.compile_engine(corpus["aliked"], cfg)
    runner = open_runner("tensorrt", entry.engine_path, "aliked")
    try:
        report = check_accuracy(corpus["aliked"], runner, model_name="aliked", precision=precision,
                                input_shapes=shapes, calibration_dir=cfg.calibration_dir)
    finally:
        runner.close()
    assert report.passed, report.to_json()
