"""The accuracy gate on the real networks (ALIKED-n16 and LightGlue with their published
weights, DINOv2-VPR ViT-S/14 seeded), exported from third-party code: real `engine-init run`
on the ONNX Runtime backend, ``verify: accuracy``, default settings, no ``outputs:`` block,
real photographs as samples. Each test prints the gate's figures (docs/realnets.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers import cli, json_events

#: The three networks, the quickest to check first (each runs alone: a failure stops a run).
ORDER = ("dinov2_vpr", "lightglue", "aliked")
_FIGURES = ("rel_l2", "cosine", "matched", "matched_engine", "agreement", "variation",
            "neighbours")
_TIMEOUT = 900  # ALIKED alone: about 1.6 s per 640x480 frame on 2 cores, engine and model


def _backbone(name: str, models: Path, data: dict[str, Path], onnx_file: str | None = None
              ) -> dict[str, Any]:
    onnx_path = models / (onnx_file or f"{name}.onnx")
    entry: dict[str, Any] = {"model_name": name, "onnx_path": str(onnx_path),
                             "accuracy": {"samples_path": str(data[name])}}
    if name == "aliked":
        entry["expected_input_shape"] = [1, 3, 480, 640]
    elif name == "dinov2_vpr":
        entry["expected_input_shape"] = [1, 3, 224, 224]
    else:
        entry["input_shapes"] = {
            f"{kind}{i}": {"min": [1, 64, width], "opt": [1, 1024, width],
                           "max": [1, 2048, width]}
            for kind, width in (("kpts", 2), ("desc", 128)) for i in (0, 1)}
    return entry


def _run(root: Path, models: Path, data: dict[str, Path], names: tuple[str, ...],
         precision: str = "fp32", onnx_file: str | None = None,
         outputs: dict[str, Any] | None = None) -> Any:
    (root / "run").mkdir(parents=True, exist_ok=True)
    doc = {"cache_root": str(root / "cache"), "readiness_marker": str(root / "run" / "ready.json"),
           "backend": "onnxruntime", "precision": precision, "verify": "accuracy",
           "calibration_path": str(data["grey_calibration"]), "lock_timeout_s": 60,
           "backbones": [_backbone(name, models, data, onnx_file) for name in names]}
    if outputs:
        doc["accuracy"] = {"outputs": outputs}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    return cli("--config", str(config), "--log-format", "json", "run", timeout=_TIMEOUT)


def _kinds(proc: Any, kind: str) -> dict[str, dict[str, Any]]:
    return {e["kv"]["model_name"]: e["kv"] for e in json_events(proc.stderr) if e["kind"] == kind}


def _show(title: str, kv: dict[str, Any]) -> str:
    """One line per output: the gate's figures, as the event gives them."""
    lines = [f"{title} ({kv.get('samples')} samples)"]
    for out in kv["outputs"]:
        figures = ", ".join(f"{k} {out[k]:.4g}" for k in _FIGURES
                            if isinstance(out.get(k), (int, float)))
        lines.append(f"  {out['name']} {out['shape']} {out['compare']}: {figures}"
                     f" [{out.get('note', '')}]")
    if "metric" in kv:
        lines.append(f"  FAILED: {kv['output']} {kv['metric']} {kv['value']:.4g} "
                     f"(bound {kv['threshold']:g})")
    text = "\n".join(lines)
    print(text)
    return text


def corrupt_engine(engine: Path, onnx_path: Path, scale: float = 1.5) -> str:
    """One weight changed inside a built engine: the weight nearest the input (the first a
    node uses, 64 or more float32 values) found verbatim in the engine file has its largest
    entry scaled (a weight deep in DINOv2's blocks would be muted by their LayerScale); the
    sidecar and the record then say the engine is what it is, as a build that computed
    something else would have written them. Returns the weight's name."""
    import onnx
    from onnx import numpy_helper

    payload = bytearray(engine.read_bytes())
    graph = onnx.load(str(onnx_path)).graph
    weights = {t.name: t for t in graph.initializer}
    in_use = dict.fromkeys(name for node in graph.node for name in node.input if name in weights)
    for tensor in (weights[name] for name in in_use):
        values = numpy_helper.to_array(tensor)
        if values.dtype != np.float32 or values.size < 64:
            continue
        raw = values.tobytes()
        at = payload.find(raw)
        if at < 0 or payload.find(raw, at + 1) >= 0:
            continue
        flat = values.reshape(-1).copy()
        flat[int(np.argmax(np.abs(flat)))] *= scale
        payload[at:at + len(raw)] = flat.tobytes()
        engine.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        (engine.parent / f"{engine.name}.sha256").write_text(digest)
        record_path = engine.parent / f"{engine.name}.record.json"
        record = json.loads(record_path.read_text())
        record["engine_sha256"] = digest
        record_path.write_text(json.dumps(record))
        return tensor.name
    raise AssertionError(f"no weight of {onnx_path.name} found verbatim in {engine.name}")


@pytest.fixture(scope="module")
def healthy(models: Path, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """One fp32 run per network, made once (a failure stops a run: each has its own)."""
    runs: dict[str, tuple[Path, Any]] = {}

    def run(name: str) -> tuple[Path, Any]:
        if name not in runs:
            root = tmp_path_factory.mktemp(f"fp32_{name}")
            runs[name] = (root, _run(root, models, data, (name,)))
        return runs[name]

    return run


@pytest.mark.parametrize("name", ORDER)
def test_a_healthy_fp32_engine_passes_with_no_outputs_block(healthy, name):
    root, proc = healthy(name)
    passed = _kinds(proc, "c10.engine.accuracy.passed")
    failed = _kinds(proc, "c10.engine.accuracy.failed")
    _show(f"{name} fp32, healthy: {'failed' if failed else 'passed'}", {**passed, **failed}[name])
    assert proc.returncode == 0 and list(passed) == [name], proc.stderr[-3000:]
    outputs = {o["name"]: o for o in passed[name]["outputs"]}
    if name == "aliked":  # read from the graph: the top-k's keypoints are a set
        assert [outputs[n]["compare"] for n in ("keypoints", "scores", "descriptors")] == [
            "points", "aligned", "aligned"]
        assert "TopK" in outputs["keypoints"]["note"] and outputs["keypoints"]["matched"] >= 0.95
    else:  # a log-assignment matrix, a descriptor: values
        [output] = outputs.values()
        assert output["compare"] == "values" and output["rel_l2"] <= 1e-4
    if name == "dinov2_vpr":  # real photographs: the nearest neighbours are judged
        assert outputs["descriptor"]["neighbours"] == 1.0
    assert json.loads((root / "run" / "ready.json").read_text())["engines"]


@pytest.mark.parametrize("name", ORDER)
def test_an_engine_with_one_weight_changed_fails(healthy, models, data, tmp_path, name):
    root, proc = healthy(name)
    assert proc.returncode == 0, "the healthy run failed: nothing to change"
    shutil.copytree(root / "cache", tmp_path / "cache")
    [engine] = (tmp_path / "cache").glob(f"{name}*.ort")
    weight = corrupt_engine(engine, models / f"{name}.onnx")
    bad = _run(tmp_path, models, data, (name,))
    failed = _kinds(bad, "c10.engine.accuracy.failed")
    assert bad.returncode == 70 and list(failed) == [name], bad.stderr[-3000:]
    _show(f"{name} fp32, weight {weight} changed: failed", failed[name])
    assert _kinds(bad, "c10.engine.built") == {}  # the changed engine was checked, not rebuilt
    assert not (tmp_path / "run" / "ready.json").exists()


@pytest.mark.parametrize("name", ORDER)
def test_int8_calibrated_on_a_constant_grey_image(models, data, tmp_path, name):
    proc = _run(tmp_path, models, data, (name,), "int8")
    passed = _kinds(proc, "c10.engine.accuracy.passed")
    failed = _kinds(proc, "c10.engine.accuracy.failed")
    assert passed or failed, proc.stderr[-3000:]
    _show(f"{name} int8 calibrated on grey: {'failed' if failed else 'passed'}",
          {**passed, **failed}[name])
    if name == "dinov2_vpr":  # it retrieves nothing
        assert proc.returncode == 70 and list(failed) == [name], proc.stderr[-3000:]


def _variant(models: Path, onnx_file: str) -> None:
    if not (models / onnx_file).is_file():
        pytest.skip(f"{onnx_file}: export it with tools/export_networks.py --variants")


def test_lightglue_with_a_nonzero_matches_output_compares_the_matches_as_a_set(models, data,
                                                                              tmp_path):
    _variant(models, "lightglue_matches.onnx")
    proc = _run(tmp_path, models, data, ("lightglue",), onnx_file="lightglue_matches.onnx")
    passed = _kinds(proc, "c10.engine.accuracy.passed")
    failed = _kinds(proc, "c10.engine.accuracy.failed")
    _show(f"lightglue_matches fp32, healthy: {'failed' if failed else 'passed'}",
          {**passed, **failed}["lightglue"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores, matches = passed["lightglue"]["outputs"]
    assert (scores["compare"], matches["compare"]) == ("values", "points")
    assert "NonZero" in matches["note"] and matches["shape"][0] > 100  # the pairs do match


def test_lightglue_exported_with_log_of_sigmoid(models, data, tmp_path):
    """torch.onnx writes F.logsigmoid as Log(Sigmoid(x)): in float32 the model itself gives
    -inf below x = -88 and loses digits well before. Its optimised engine underflows in other
    elements than the model: compared as values, the gate fails it on ``nonfinite`` (values
    the engine gives as -inf where the model's are finite); compared by its argmax (the
    assignment, what a matcher is for), it passes."""
    _variant(models, "lightglue_log_of_sigmoid.onnx")
    onnx_file = "lightglue_log_of_sigmoid.onnx"
    proc = _run(tmp_path / "values", models, data, ("lightglue",), onnx_file=onnx_file)
    [failed] = _kinds(proc, "c10.engine.accuracy.failed").values()
    _show("lightglue_log_of_sigmoid fp32, healthy: failed", failed)
    assert proc.returncode == 70 and failed["metric"] == "nonfinite"
    argmax = _run(tmp_path / "argmax", models, data, ("lightglue",), onnx_file=onnx_file,
                  outputs={"scores": {"compare": "argmax", "axis": -1}})
    events = {**_kinds(argmax, "c10.engine.accuracy.passed"),
              **_kinds(argmax, "c10.engine.accuracy.failed")}
    _show(f"lightglue_log_of_sigmoid fp32, scores compare argmax: exit {argmax.returncode}",
          events["lightglue"])
    assert argmax.returncode == 0, argmax.stderr[-3000:]
    [scores] = events["lightglue"]["outputs"]
    assert scores["agreement"] >= 0.99 and scores["nonfinite"] == 0
