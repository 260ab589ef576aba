"""Generate the demo corpus: small but real ONNX models shaped like the navigation stack's.

``python -m tools.demo OUT_DIR`` writes, with ``onnx.helper`` and fixed seeds (same bytes on
every run):

- ``dinov2_vpr.onnx``: an image encoder, ``pixels[1,3,32,32] -> descriptor[1,64]`` (L2-normed);
- ``lightglue.onnx``: a matcher with dynamic keypoint counts,
  ``desc0[1,N,64], desc1[1,M,64] -> scores[1,N,M]``;
- ``aliked.onnx``: a keypoint detector, ``image[1,3,64,64] -> scores[1,1,64,64]``;
- ``calibration/<model>/batch_XXX.(npy|npz)``: INT8 calibration batches for each.

``pad_mb`` inflates the encoder with an unused-free large weight for size-dependent tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["build_corpus", "make_aliked", "make_dinov2_vpr", "make_lightglue"]

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime and TensorRT release we support


def _np() -> Any:
    import numpy as np

    return np


def _save(graph: Any, path: Path) -> Path:
    from onnx import checker, helper, save

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="engine-init-demo")
    model.ir_version = IR_VERSION
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def make_dinov2_vpr(path: Path, seed: int = 1, pad_mb: int = 0) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = _np().random.default_rng(seed)
    f32 = _np().float32
    hidden = 16 + (pad_mb * 1024 * 1024) // (4 * 64)  # grows the Gemm weight to ~pad_mb MB
    weights = [
        numpy_helper.from_array(rng.standard_normal((hidden, 3, 3, 3)).astype(f32) * 0.1, "conv_w"),
        numpy_helper.from_array(_np().zeros(hidden, f32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((hidden, 64)).astype(f32) * 0.1, "proj_w"),
        numpy_helper.from_array(_np().zeros(64, f32), "proj_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixels", "conv_w", "conv_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "proj_w", "proj_b"], ["p1"]),
        helper.make_node("LpNormalization", ["p1"], ["descriptor"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "dinov2_vpr",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, [1, 64])], weights)
    return _save(graph, path)


def make_lightglue(path: Path, seed: int = 2) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = _np().random.default_rng(seed)
    proj = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(_np().float32) * 0.1, "proj")
    nodes = [
        helper.make_node("MatMul", ["desc0", "proj"], ["q"]),
        helper.make_node("Transpose", ["desc1"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["sim"]),
        helper.make_node("Softmax", ["sim"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "lightglue",
        [helper.make_tensor_value_info("desc0", TensorProto.FLOAT, [1, "n0", 64]),
         helper.make_tensor_value_info("desc1", TensorProto.FLOAT, [1, "n1", 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "n0", "n1"])], [proj])
    return _save(graph, path)


def make_aliked(path: Path, seed: int = 3) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = _np().random.default_rng(seed)
    f32 = _np().float32
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(f32) * 0.2, "w1"),
        numpy_helper.from_array(rng.standard_normal((1, 8, 3, 3)).astype(f32) * 0.2, "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "aliked",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 64, 64])], weights)
    return _save(graph, path)


def write_calibration(root: Path, batches: int = 4, seed: int = 7) -> Path:
    np = _np()
    rng = np.random.default_rng(seed)
    for model, shape in (("dinov2_vpr", (1, 3, 32, 32)), ("aliked", (1, 3, 64, 64))):
        folder = root / model
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(batches):
            np.save(folder / f"batch_{i:03d}.npy", rng.random(shape, dtype=np.float32))
    folder = root / "lightglue"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(batches):
        np.savez(folder / f"batch_{i:03d}.npz",
                 desc0=rng.standard_normal((1, 128, 64)).astype(np.float32),
                 desc1=rng.standard_normal((1, 96, 64)).astype(np.float32))
    return root


def build_corpus(out: Path) -> dict[str, Path]:
    """Write the three models and their calibration batches under ``out``."""
    out = Path(out)
    paths = {
        "dinov2_vpr": make_dinov2_vpr(out / "models" / "dinov2_vpr.onnx"),
        "lightglue": make_lightglue(out / "models" / "lightglue.onnx"),
        "aliked": make_aliked(out / "models" / "aliked.onnx"),
    }
    write_calibration(out / "calibration")
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "build/demo")
    for name, p in build_corpus(target).items():
        print(f"{name}: {p} ({p.stat().st_size} bytes)")
