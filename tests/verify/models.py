"""Small real ONNX models for the gate's tests, built with onnx.helper (beside the demo's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, checker, helper, numpy_helper, save

from app.backends.onnxruntime import OnnxRuntimeBackend
from app.values import BuildConfig, InputProfile, PrecisionMode

#: The demo models' build profiles.
SHAPES: dict[str, dict[str | None, InputProfile]] = {
    "dinov2_vpr": {None: InputProfile.fixed((1, 3, 32, 32))},
    "aliked": {None: InputProfile.fixed((1, 3, 64, 64))},
    "lightglue": {k: InputProfile((1, 32, 64), (1, 256, 64), (1, 1024, 64)) for k in ("desc0", "desc1")},
}


def build_ort(folder: Path, onnx: Path, name: str, precision: PrecisionMode,
              calibration: Path | None = None, shapes=None) -> Path:
    """A real ONNX Runtime backend build of ``onnx``; returns the artifact's path."""
    engine = folder / f"{name}.{precision.value}.ort"
    cfg = BuildConfig(precision=precision, model_name=name, engine_path=engine,
                      input_shapes=SHAPES.get(name, {}) if shapes is None else shapes,
                      calibration_dir=calibration)
    OnnxRuntimeBackend().compile_engine(onnx, cfg)
    return engine


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    save(model, str(path))
    return path


def make_embedding(path: Path) -> Path:
    """``ids[1,4] (int64) -> vectors[1,4,8]``: a Gather, which random indices could send out of range."""
    weights = np.random.default_rng(5).standard_normal((10, 8)).astype(np.float32)
    table = numpy_helper.from_array(weights, "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0)], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, [1, 4, 8])], [table])
    return _save(graph, path)


def make_masked(path: Path) -> Path:
    """``x[1,6] (float), keep[1,6] (bool) -> y = where(keep, x, 0)``: two outputs, one a copy."""
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    graph = helper.make_graph(
        [helper.make_node("Where", ["keep", "x", "zero"], ["y"]),
         helper.make_node("Identity", ["x"], ["x_copy"])], "masked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("keep", TensorProto.BOOL, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, [1, 6])], [zero])
    return _save(graph, path)


def make_recurrent(path: Path, projected: bool = False) -> Path:
    """``x[6,1,8] -> Y[6,1,1,8]`` through an LSTM, which ONNX Runtime's static quantization
    leaves in float32; ``projected``: a MatMul before it, which it quantizes."""
    rng = np.random.default_rng(11)
    weights = [numpy_helper.from_array(rng.standard_normal((1, 32, 8)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.standard_normal((1, 32, 8)).astype(np.float32), "R")]
    nodes, source = [], "x"
    if projected:
        weights.append(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "P"))
        nodes.append(helper.make_node("MatMul", ["x", "P"], ["xp"]))
        source = "xp"
    nodes.append(helper.make_node("LSTM", [source, "W", "R"], ["Y"], hidden_size=8))
    graph = helper.make_graph(
        nodes, "recurrent", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [6, 1, 1, 8])], weights)
    return _save(graph, path)


def write_batches(folder: Path, shape: tuple[int, ...], count: int = 3) -> Path:
    """``count`` calibration batches (.npy, one input) of uniform [0, 1) floats."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    for i in range(count):
        np.save(folder / f"batch_{i:03d}.npy", rng.random(shape, dtype=np.float32))
    return folder
