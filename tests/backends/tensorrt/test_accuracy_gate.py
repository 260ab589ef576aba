"""The accuracy gate on engines the TensorRT backend built, through the runner the backend opens.

TensorRT cannot run here: the stand-in of TensorRT 10.3 builds (its engine names the parsed
model) and, with ``computes``, executes what that model gives on ONNX Runtime, writing every
output to device memory of the CUDA stand-in; a data-dependent output goes through the
runner's output allocator in the shape it came out in. The network is LightGlue-like
(tests/verify/networks.py): its ``matches`` come from NonZero, so the gate compares them as a
set, and its samples are descriptor pairs as a matcher sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import BackboneSpec, EngineCompiler
from app.config_sections import AccuracyConfig
from app.errors import AccuracyError
from app.values import BuildConfig, PrecisionMode
from app.verify.accuracy import run_gate
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.backends.tensorrt.helpers import host, runtime_for
from tests.helpers import make_request
from tests.verify import networks as nets

PROFILES = {name: profile for name, profile in nets.SHAPES["lightglue"].items() if name}


@pytest.fixture(scope="module")
def lightglue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lightglue")
    return (nets.make_lightglue(root / "lightglue.onnx", matches=True),
            nets.write_pairs(root / "pairs", 4, seed=1))


def _spec(onnx: Path, samples: Path) -> BackboneSpec:
    return BackboneSpec("lightglue", onnx, input_shapes=PROFILES, verify="accuracy",
                        accuracy=AccuracyConfig(samples_path=samples))


def _fake(**fp16_outputs: Any) -> FakeTensorRT:
    fake = FakeTensorRT("10.3.0")
    fake.computes = True
    fake.fp16_outputs = fp16_outputs
    return fake


def _build(tmp_path: Path, fake: FakeTensorRT, spec: BackboneSpec, precision: PrecisionMode,
           events: Any) -> Any:
    request = make_request((spec,), tmp_path / "cache", host("10.3.0"), precision)
    [result] = EngineCompiler(runtime_for(fake), events[0]).compile_engines_for_corpus(request)
    return result


def test_a_lightglue_engine_passes_with_its_matches_compared_as_a_set(tmp_path, lightglue, events):
    onnx, samples = lightglue
    fake = _fake()
    result = _build(tmp_path, fake, _spec(onnx, samples), PrecisionMode.FP32, events)
    assert result.accuracy is not None and result.accuracy["passed"], result.accuracy
    [passed] = events[1].kv("c10.engine.accuracy.passed")
    assert [(o["name"], o["compare"]) for o in passed["outputs"]] == [("scores", "values"),
                                                                     ("matches", "points")]
    assert passed["outputs"][1]["matched"] == passed["outputs"][1]["matched_engine"] == 1.0
    # The runner the backend opens gives the matches in the count this sample has.
    pair = np.load(next(samples.glob("*.npz")))
    feeds = {"desc0": pair["desc0"], "desc1": pair["desc1"]}
    want = _reference(onnx, feeds)
    runner = runtime_for(fake).open_runner(result.entry.engine_path, BuildConfig(
        PrecisionMode.FP32, "lightglue", result.entry.engine_path))
    try:
        got = runner.run(feeds)["matches"]
    finally:
        runner.close()
    assert got.shape == want.shape and len(want) >= 3 and np.array_equal(got, want)
    assert {("IOutputAllocator", "reallocate_output"),
            ("IOutputAllocator", "notify_shape")} <= fake.touched


@pytest.mark.parametrize("change", ["one match less", "one match more"])
def test_an_fp16_engine_finding_one_match_more_or_less_passes(tmp_path, lightglue, events, change):
    onnx, samples = lightglue
    calls = []

    def moved(matches: Any) -> Any:
        """In the first sample (of 4, 15 matches in all): a score near the threshold that
        FP16 put on the other side."""
        calls.append(len(matches))
        if len(calls) > 1:
            return matches
        if change == "one match less":
            return matches[:-1]
        absent = next([i, j] for i in range(64) for j in range(64)
                      if not ((matches[:, 0] == i) & (matches[:, 1] == j)).any())
        return np.concatenate([matches, np.array([absent], matches.dtype)])

    result = _build(tmp_path, _fake(matches=moved), _spec(onnx, samples), PrecisionMode.FP16,
                    events)
    assert result.accuracy is not None and result.accuracy["passed"], result.accuracy
    [figures] = [o for o in result.accuracy["outputs"] if o["name"] == "matches"]
    side = "matched" if change == "one match less" else "matched_engine"
    assert 0.9 <= figures[side] < 1.0  # the gate saw the moved match, within FP16's bound
    assert len(calls) == 4 and sum(calls) >= 10  # one of many moved: a healthy FP16 engine


def test_an_engine_with_a_changed_weight_fails(tmp_path, lightglue, events):
    onnx, samples = lightglue
    bad = nets.corrupt(onnx, tmp_path / "lightglue_bad.onnx")
    fake = _fake()
    runtime = runtime_for(fake)
    (tmp_path / "cache").mkdir()
    config = BuildConfig(PrecisionMode.FP32, "lightglue",
                         tmp_path / "cache" / runtime.artifact_name("lightglue", PrecisionMode.FP32),
                         dict(PROFILES), cache_root=tmp_path / "cache", verify="accuracy")
    engine = runtime.compile_engine(bad, config).engine_path  # built from the changed weights
    with pytest.raises(AccuracyError, match="lightglue: the fp32 engine fails the accuracy check"):
        run_gate(runtime, engine, _spec(onnx, samples), config, events[0],
                 engine_sha256="e", onnx_sha256="o")
    [failed] = events[1].kv("c10.engine.accuracy.failed")
    assert failed["model_name"] == "lightglue"


def _reference(onnx: Path, feeds: dict[str, Any]) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return session.run(["matches"], feeds)[0]
