"""Small real ONNX models built like the three mission networks (docs: networks.md), with the
ops that decide what TensorRT does with them; each runs on ONNX Runtime.

- :func:`make_aliked`: Conv, ``DeformConv`` (opset 19; or a plain Conv: the portable export),
  a score map flattened for ``TopK``, descriptors sampled with ``GridSample``.
- :func:`make_lightglue`: dynamic keypoint counts, attention (MatMul, Softmax), LayerNorm, an
  assignment ``scores`` matrix and ``matches`` from ``NonZero`` (their count depends on data).
- :func:`make_dinov2`: a patch-14 embedding, LayerNorm (``LayerNormalization`` at opset 17,
  decomposed into ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div below), attention, Erf GELU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, checker, helper, numpy_helper, save

_RNG = np.random.default_rng(21)


def _w(name: str, *shape: int, scale: float = 0.2) -> Any:
    return numpy_helper.from_array((_RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i(name: str, values: list[int]) -> Any:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _f(name: str, value: float) -> Any:
    return numpy_helper.from_array(np.array([value], np.float32), name)


def _save(nodes: list[Any], name: str, inputs: list[Any], outputs: list[Any], inits: list[Any],
          path: Path, opset: int) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 9
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def _n(op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> Any:
    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def make_aliked(path: Path, deform: bool = True, top_k: int = 16, size: int = 16,
                dynamic: bool = False) -> Path:
    """``image [1,3,H,W]`` -> ``scores [1,k]``, ``keypoints [1,k]`` (flat indices),
    ``descriptors [1,8,H,W]``; ``dynamic``: H and W are ``h`` and ``w``."""
    h, w = ("h", "w") if dynamic else (size, size)
    inits = [_w("w1", 8, 3, 3, 3), _w("wd", 8, 8, 3, 3), _w("bd", 8), _w("ws", 1, 8, 1, 1),
             _w("wg", 2, 8, 1, 1), _i("flat_shape", [1, -1]), _i("k", [top_k])]
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [_n("Conv", ["image", "w1"], ["c1"], "block1/conv", **pads),
             _n("Relu", ["c1"], ["f1"], "block1/relu")]
    if deform:
        inits += [_w("wo", 18, 8, 3, 3, scale=0.05), _w("wm", 9, 8, 3, 3)]
        nodes += [_n("Conv", ["f1", "wo"], ["offset"], "block2/offset", **pads),
                  _n("Conv", ["f1", "wm"], ["m0"], "block2/mask_conv", **pads),
                  _n("Sigmoid", ["m0"], ["mask"], "block2/mask"),
                  _n("DeformConv", ["f1", "wd", "offset", "bd", "mask"], ["f2"], "block2/dcn",
                     kernel_shape=[3, 3], **pads)]
    else:
        nodes.append(_n("Conv", ["f1", "wd", "bd"], ["f2"], "block2/conv", **pads))
    nodes += [_n("Conv", ["f2", "ws"], ["s0"], "head/score"),
              _n("Sigmoid", ["s0"], ["smap"], "head/sigmoid"),
              _n("Reshape", ["smap", "flat_shape"], ["flat"], "head/flatten"),
              _n("TopK", ["flat", "k"], ["scores", "keypoints"], "head/topk", axis=-1),
              _n("Conv", ["f2", "wg"], ["g0"], "sddh/offsets"),
              _n("Tanh", ["g0"], ["g1"], "sddh/tanh"),
              _n("Transpose", ["g1"], ["grid"], "sddh/grid", perm=[0, 2, 3, 1]),
              _n("GridSample", ["f2", "grid"], ["descriptors"], "sddh/sample", align_corners=0)]
    return _save(nodes, "aliked", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                  [1, 3, h, w])],
                 [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, top_k]),
                  helper.make_tensor_value_info("keypoints", TensorProto.INT64, [1, top_k]),
                  helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, [1, 8, h, w])],
                 inits, path, 19 if deform else 17)


def _layernorm(x: str, out: str, prefix: str, decomposed: bool, dim: int) -> tuple[list[Any],
                                                                                    list[Any]]:
    """A LayerNorm over the last axis: one node at opset 17, else the chain TensorRT warns about."""
    inits = [numpy_helper.from_array(np.ones(dim, np.float32), f"{prefix}/gamma"),
             numpy_helper.from_array(np.zeros(dim, np.float32), f"{prefix}/beta")]
    if not decomposed:
        return [_n("LayerNormalization", [x, f"{prefix}/gamma", f"{prefix}/beta"], [out],
                   f"{prefix}/LayerNormalization", axis=-1)], inits
    inits += [_f(f"{prefix}/two", 2.0), _f(f"{prefix}/eps", 1e-6)]
    p = prefix
    return [_n("ReduceMean", [x], [f"{p}/mean"], f"{p}/ReduceMean", axes=[-1]),
            _n("Sub", [x, f"{p}/mean"], [f"{p}/d"], f"{p}/Sub"),
            _n("Pow", [f"{p}/d", f"{p}/two"], [f"{p}/sq"], f"{p}/Pow"),
            _n("ReduceMean", [f"{p}/sq"], [f"{p}/var"], f"{p}/ReduceMean_1", axes=[-1]),
            _n("Add", [f"{p}/var", f"{p}/eps"], [f"{p}/ve"], f"{p}/Add"),
            _n("Sqrt", [f"{p}/ve"], [f"{p}/sd"], f"{p}/Sqrt"),
            _n("Div", [f"{p}/d", f"{p}/sd"], [f"{p}/n"], f"{p}/Div"),
            _n("Mul", [f"{p}/n", f"{p}/gamma"], [f"{p}/g"], f"{p}/Mul"),
            _n("Add", [f"{p}/g", f"{p}/beta"], [out], f"{p}/Add_1")], inits


def make_lightglue(path: Path, threshold: float = 0.3) -> Path:
    """``desc0 [1,n,16]``, ``desc1 [1,m,16]`` -> ``scores [1,n,m]``, ``matches [M,3]`` (int64,
    from NonZero: M depends on the data)."""
    nodes, inits = [_n("MatMul", ["desc0", "wq"], ["q"], "attn/q"),
                    _n("MatMul", ["desc1", "wk"], ["k"], "attn/k"),
                    _n("Transpose", ["k"], ["kt"], "attn/kt", perm=[0, 2, 1]),
                    _n("MatMul", ["q", "kt"], ["sim"], "attn/sim"),
                    _n("Softmax", ["sim"], ["p"], "attn/softmax", axis=-1),
                    _n("MatMul", ["p", "desc1"], ["v"], "attn/v"),
                    _n("Add", ["desc0", "v"], ["h"], "attn/residual")], [_w("wq", 16, 16),
                                                                        _w("wk", 16, 16)]
    ln_nodes, ln_inits = _layernorm("h", "hn", "ffn/norm", False, 16)
    nodes += [*ln_nodes,
              _n("MatMul", ["hn", "kt"], ["logits"], "assign/sim"),
              _n("Softmax", ["logits"], ["scores"], "assign/softmax", axis=-1),
              _n("Greater", ["scores", "thr"], ["valid"], "filter/greater"),
              _n("NonZero", ["valid"], ["where"], "filter/nonzero"),
              _n("Transpose", ["where"], ["matches"], "filter/matches", perm=[1, 0])]
    inits += [*ln_inits, _f("thr", threshold)]
    vi = helper.make_tensor_value_info
    return _save(nodes, "lightglue", [vi("desc0", TensorProto.FLOAT, [1, "n", 16]),
                                      vi("desc1", TensorProto.FLOAT, [1, "m", 16])],
                 [vi("scores", TensorProto.FLOAT, [1, "n", "m"]),
                  vi("matches", TensorProto.INT64, ["num_matches", 3])], inits, path, 17)


def make_dinov2(path: Path, opset: int = 17, tokens: bool = False) -> Path:
    """``image [1,3,28,28]`` -> ``descriptor [1,16]``: patch 14, LayerNorm (decomposed below
    opset 17), attention, Erf GELU, mean over tokens; ``tokens``: the transformer alone, from
    ``x [1,4,16]`` (every compute layer inside Myelin)."""
    decomposed = opset < 17
    inits = [_w("patch", 16, 3, 14, 14, scale=0.05), _i("tok_shape", [1, 16, 4]),
             _w("wq", 16, 16), _w("wk", 16, 16), _w("wv", 16, 16), _w("w1", 16, 32),
             _w("w2", 32, 16), _f("sqrt2", float(np.sqrt(2.0))), _f("one", 1.0), _f("half", 0.5)]
    nodes = [] if tokens else [
        _n("Conv", ["image", "patch"], ["pe"], "patch_embed/proj", strides=[14, 14]),
        _n("Reshape", ["pe", "tok_shape"], ["pe3"], "patch_embed/reshape"),
        _n("Transpose", ["pe3"], ["x"], "patch_embed/tokens", perm=[0, 2, 1])]
    if tokens:
        inits = inits[2:]
    ln1, i1 = _layernorm("x", "x1", "blocks.0/norm1", decomposed, 16)
    ln2, i2 = _layernorm("x2", "x3", "blocks.0/norm2", decomposed, 16)
    nodes += [*ln1,
              _n("MatMul", ["x1", "wq"], ["q"], "blocks.0/attn/q"),
              _n("MatMul", ["x1", "wk"], ["k"], "blocks.0/attn/k"),
              _n("MatMul", ["x1", "wv"], ["v"], "blocks.0/attn/v"),
              _n("Transpose", ["k"], ["kt"], "blocks.0/attn/kt", perm=[0, 2, 1]),
              _n("MatMul", ["q", "kt"], ["att"], "blocks.0/attn/qk"),
              _n("Softmax", ["att"], ["pa"], "blocks.0/attn/softmax", axis=-1),
              _n("MatMul", ["pa", "v"], ["o"], "blocks.0/attn/av"),
              _n("Add", ["x", "o"], ["x2"], "blocks.0/residual1")]
    nodes += [*ln2,
              _n("MatMul", ["x3", "w1"], ["m1"], "blocks.0/mlp/fc1"),
              _n("Div", ["m1", "sqrt2"], ["m2"], "blocks.0/mlp/gelu/div"),
              _n("Erf", ["m2"], ["m3"], "blocks.0/mlp/gelu/erf"),
              _n("Add", ["m3", "one"], ["m4"], "blocks.0/mlp/gelu/add"),
              _n("Mul", ["m1", "m4"], ["m5"], "blocks.0/mlp/gelu/mul"),
              _n("Mul", ["m5", "half"], ["m6"], "blocks.0/mlp/gelu/half"),
              _n("MatMul", ["m6", "w2"], ["m7"], "blocks.0/mlp/fc2"),
              _n("Add", ["x2", "m7"], ["x4"], "blocks.0/residual2"),
              _n("ReduceMean", ["x4"], ["descriptor"], "head/gem", axes=[1], keepdims=0)]
    vi = helper.make_tensor_value_info
    source = vi("x", TensorProto.FLOAT, [1, 4, 16]) if tokens else vi(
        "image", TensorProto.FLOAT, [1, 3, 28, 28])
    return _save(nodes, "dinov2", [source],
                 [vi("descriptor", TensorProto.FLOAT, [1, 16])], inits + i1 + i2, path, opset)
