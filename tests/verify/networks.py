"""Small real ONNX networks with the traits of the robot's three (docs/accuracy-gate.md), built
with onnx.helper at opset 19 and seeded weights:

- ``aliked``: conv, DeformConv (offsets and mask from convs), a score map, max-pool NMS, a TopK
  over near-equal scores, sub-pixel offsets gathered at the keypoints, descriptors sampled at
  them with GridSample and L2-normalised: ``image[1,3,32,32] -> keypoints[1,K,2] (pixels),
  scores[1,K], descriptors[1,K,16]``;
- ``lightglue``: self- and cross-attention over dynamic keypoint counts, a log double-softmax
  assignment matrix with dustbins ``scores[1,N+1,M+1]``; ``matches=True`` adds
  ``matches[K,2]`` (int64) from ``NonZero`` of the assignment above a threshold;
- ``dinov2``: patch-14 conv embedding, CLS token, LayerNorm, attention, Erf GELU, GeM over the
  patches with the CLS token, L2-normalised: ``pixels[1,3,56,56] -> descriptor[1,32]``.

``corrupt`` writes a copy with one weight changed: an engine built from it is a broken engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, checker, helper, load, numpy_helper, save

from app.values import InputProfile

OPSET = 19
K = 48  # keypoints of the aliked-like network: about one position in 21 of its 32x32 map

SHAPES: dict[str, dict[str | None, InputProfile]] = {
    "aliked": {None: InputProfile.fixed((1, 3, 32, 32))},
    "dinov2": {None: InputProfile.fixed((1, 3, 56, 56))},
    "lightglue": {k: InputProfile((1, 8, 16), (1, 24, 16), (1, 64, 16)) for k in ("desc0", "desc1")},
}


class _Graph:
    """Nodes and seeded weights, named in order."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def w(self, shape, scale: float = 0.3, value=None) -> str:
        self.count += 1
        name = f"w{self.count}"
        array = (self.rng.standard_normal(shape) * scale if value is None else np.asarray(value))
        dtype = np.int64 if np.asarray(array).dtype.kind == "i" else np.float32
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def op(self, kind: str, inputs, outputs=None, **attrs) -> str:
        self.count += 1
        outputs = outputs or [f"t{self.count}"]
        self.nodes.append(helper.make_node(kind, list(inputs), list(outputs), **attrs))
        return outputs[0]

    def save(self, name: str, inputs, outputs, path: Path) -> Path:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        checker.check_model(model)
        save(model, str(path))
        return path


def _f(name: str, dims) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def make_aliked(path: Path, seed: int = 3, spread: float = 1.0, split_bias: bool = False) -> Path:
    g, side = _Graph(seed), 32
    c1 = g.op("Relu", [g.op("Conv", ["image", g.w((8, 3, 3, 3)), g.w((8,))], pads=[1] * 4)])
    offset = g.op("Conv", [c1, g.w((18, 8, 3, 3), 0.05)], pads=[1] * 4)
    mask = g.op("Sigmoid", [g.op("Conv", [c1, g.w((9, 8, 3, 3))], pads=[1] * 4)])
    d = g.op("Relu", [g.op("DeformConv", [c1, g.w((16, 8, 3, 3), 0.2), offset, g.w((16,)), mask],
                           pads=[1] * 4, kernel_shape=[3, 3])])
    # Scores around 4.0; ``spread`` 3e-5 puts them a few float32 steps apart, so that
    # near-equal scores decide the top-k's order, as ALIKED's do.
    weight = g.w((1, 16, 3, 3), spread)
    if split_bias:  # the same function, rounded otherwise (as another engine's kernels do)
        score_map = g.op("Sub", [g.op("Conv", [d, weight, g.w((1,), value=[5.0])], pads=[1] * 4),
                                 g.w((), value=1.0)])
    else:
        score_map = g.op("Conv", [d, weight, g.w((1,), value=[4.0])], pads=[1] * 4)
    pooled = g.op("MaxPool", [score_map], kernel_shape=[3, 3], pads=[1] * 4)
    kept = g.op("Where", [g.op("Equal", [score_map, pooled]), score_map, g.w((), value=0.0)])
    flat = g.op("Reshape", [kept, g.w((2,), value=[1, side * side])])
    g.op("TopK", [flat, g.w((1,), value=[K])], ["scores", "idx"], axis=-1)
    idx = "idx"
    x = g.op("Cast", [g.op("Mod", [idx, g.w((), value=side)])], to=TensorProto.FLOAT)
    y = g.op("Cast", [g.op("Div", [idx, g.w((), value=side)])], to=TensorProto.FLOAT)
    axis2 = g.w((1,), value=[2])
    grid_xy = g.op("Concat", [g.op("Unsqueeze", [x, axis2]), g.op("Unsqueeze", [y, axis2])], axis=2)
    sub = g.op("Mul", [g.op("Tanh", [g.op("Conv", [d, g.w((2, 16, 1, 1))])]), g.w((), value=0.5)])
    sub_rows = g.op("Transpose", [g.op("Reshape", [sub, g.w((3,), value=[1, 2, side * side])])],
                    perm=[0, 2, 1])
    sub_at = g.op("Gather", [sub_rows, g.op("Squeeze", [idx, g.w((1,), value=[0])])], axis=1)
    keypoints = g.op("Add", [grid_xy, sub_at], ["keypoints"])
    normed = g.op("Sub", [g.op("Mul", [keypoints, g.w((), value=2.0 / (side - 1))]),
                          g.w((), value=1.0)])
    features = g.op("Conv", [d, g.w((16, 16, 1, 1))])
    sampled = g.op("GridSample", [features, g.op("Unsqueeze", [normed, g.w((1,), value=[1])])],
                   align_corners=1)
    rows = g.op("Transpose", [g.op("Squeeze", [sampled, axis2])], perm=[0, 2, 1])
    norm = g.op("ReduceL2", [rows, g.w((1,), value=[-1])], keepdims=1)
    g.op("Div", [rows, norm], ["descriptors"])
    return g.save("aliked", [_f("image", [1, 3, side, side])],
                  [_f("keypoints", [1, K, 2]), _f("scores", [1, K]), _f("descriptors", [1, K, 16])],
                  path)


def _attention(g: _Graph, x: str, source: str, dim: int) -> str:
    q = g.op("MatMul", [x, g.w((dim, dim), dim ** -0.5)])
    k = g.op("MatMul", [source, g.w((dim, dim), dim ** -0.5)])
    v = g.op("MatMul", [source, g.w((dim, dim), dim ** -0.5)])
    att = g.op("Softmax", [g.op("Div", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])]),
                                        g.w((), value=float(dim) ** 0.5)])], axis=-1)
    return g.op("Add", [x, g.op("MatMul", [g.op("MatMul", [att, v]), g.w((dim, dim), dim ** -0.5)])])


def make_lightglue(path: Path, seed: int = 2, matches: bool = False) -> Path:
    g, dim = _Graph(seed), 16
    x0, x1 = (g.op("MatMul", [d, g.w((dim, dim), dim ** -0.5)]) for d in ("desc0", "desc1"))
    for _ in range(2):
        x0, x1 = _attention(g, x0, x0, dim), _attention(g, x1, x1, dim)
        x0, x1 = _attention(g, x0, x1, dim), _attention(g, x1, x0, dim)
    sim = g.op("Mul", [g.op("MatMul", [x0, g.op("Transpose", [x1], perm=[0, 2, 1])]),
                       g.w((), value=8.0 / dim)])
    core = g.op("Add", [g.op("LogSoftmax", [sim], axis=2), g.op("LogSoftmax", [sim], axis=1)])
    wz = g.w((dim, 1))
    z0, z1 = g.op("MatMul", [x0, wz]), g.op("MatMul", [x1, wz])

    def logsig(t: str, sign: float) -> str:
        return g.op("Neg", [g.op("Softplus", [g.op("Mul", [t, g.w((), value=-sign)])])])

    z1t = g.op("Transpose", [z1], perm=[0, 2, 1])
    inner = g.op("Add", [g.op("Add", [core, logsig(z0, 1.0)]), logsig(z1t, 1.0)])
    right = g.op("Concat", [inner, logsig(z0, -1.0)], axis=2)
    bottom = g.op("Concat", [logsig(z1t, -1.0), g.w((1, 1, 1), value=[[[0.0]]])], axis=2)
    g.op("Concat", [right, bottom], ["scores"], axis=1)
    outputs = [_f("scores", [1, "n0p", "n1p"])]
    if matches:
        above = g.op("Greater", [g.op("Squeeze", [inner, g.w((1,), value=[0])]),
                                 g.w((), value=float(np.log(0.1)))])
        g.op("Transpose", [g.op("NonZero", [above])], ["matches"], perm=[1, 0])
        outputs.append(helper.make_tensor_value_info("matches", TensorProto.INT64, ["k", 2]))
    return g.save("lightglue", [_f("desc0", [1, "n0", dim]), _f("desc1", [1, "n1", dim])],
                  outputs, path)


def _norm(g: _Graph, x: str, dim: int) -> str:
    return g.op("LayerNormalization", [x, g.w((dim,), value=np.ones(dim)),
                                       g.w((dim,), value=np.zeros(dim))], axis=-1)


def _block(g: _Graph, x: str, dim: int, heads: int, tokens: int) -> str:
    h = _norm(g, x, dim)
    qkv = g.op("MatMul", [h, g.w((dim, 3 * dim), dim ** -0.5)])
    split = g.op("Transpose", [g.op("Reshape", [qkv, g.w((5,), value=[1, tokens, 3, heads,
                                                                     dim // heads])])],
                 perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", [split, g.w((), value=i)], axis=0) for i in range(3))
    att = g.op("Softmax", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k],
                                                                 perm=[0, 1, 3, 2])]),
                                        g.w((), value=(dim // heads) ** -0.5)])], axis=-1)
    merged = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3]),
                              g.w((3,), value=[1, tokens, dim])])
    x = g.op("Add", [x, g.op("MatMul", [merged, g.w((dim, dim), dim ** -0.5)])])
    h = _norm(g, x, dim)
    up = g.op("MatMul", [h, g.w((dim, 2 * dim), dim ** -0.5)])
    erf = g.op("Erf", [g.op("Mul", [up, g.w((), value=2 ** -0.5)])])
    gelu = g.op("Mul", [g.op("Mul", [up, g.w((), value=0.5)]),
                        g.op("Add", [erf, g.w((), value=1.0)])])
    return g.op("Add", [x, g.op("MatMul", [gelu, g.w((2 * dim, dim), (2 * dim) ** -0.5)])])


def make_dinov2(path: Path, seed: int = 1) -> Path:
    g, dim, side, heads = _Graph(seed), 32, 56, 2
    patches = (side // 14) ** 2
    emb = g.op("Conv", ["pixels", g.w((dim, 3, 14, 14), 0.02), g.w((dim,), 0.02)], strides=[14, 14])
    tokens = g.op("Transpose", [g.op("Reshape", [emb, g.w((3,), value=[1, dim, patches])])],
                  perm=[0, 2, 1])
    x = g.op("Add", [g.op("Concat", [g.w((1, 1, dim)), tokens], axis=1),
                     g.w((1, patches + 1, dim), 0.1)])
    for _ in range(2):
        x = _block(g, x, dim, heads, patches + 1)
    x = _norm(g, x, dim)
    cls = g.op("Squeeze", [g.op("Slice", [x, g.w((1,), value=[0]), g.w((1,), value=[1]),
                                          g.w((1,), value=[1])]), g.w((1,), value=[1])])
    body = g.op("Slice", [x, g.w((1,), value=[1]), g.w((1,), value=[patches + 1]),
                          g.w((1,), value=[1])])
    cubed = g.op("Pow", [g.op("Clip", [body, g.w((), value=1e-6)]), g.w((), value=3.0)])
    gem = g.op("Pow", [g.op("ReduceMean", [cubed, g.w((1,), value=[1])], keepdims=0),
                       g.w((), value=1.0 / 3.0)])
    both = g.op("Concat", [cls, gem], axis=1)
    g.op("Div", [both, g.op("ReduceL2", [both, g.w((1,), value=[-1])], keepdims=1)], ["descriptor"])
    return g.save("dinov2", [_f("pixels", [1, 3, side, side])], [_f("descriptor", [1, 2 * dim])],
                  path)


def write_pairs(folder: Path, count: int, seed: int) -> Path:
    """Samples for ``lightglue``: image pairs' descriptors as a matcher sees them, the second
    image's keypoints the first's, shuffled, two lost, with noise; counts differ per pair."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = 20 + 4 * i
        desc0 = rng.standard_normal((1, n, 16)).astype(np.float32)
        desc1 = desc0[:, rng.permutation(n)[: n - 2]] + 0.1 * rng.standard_normal((1, n - 2, 16))
        np.savez(folder / f"pair_{i}.npz", desc0=desc0, desc1=desc1.astype(np.float32))
    return folder


def corrupt(source: Path, out: Path, initializer_index: int = 0, scale: float = 1.5) -> Path:
    """``source`` with one weight's largest entry scaled: an engine that computes something else."""
    model = load(str(source))
    tensor = model.graph.initializer[initializer_index]
    values = numpy_helper.to_array(tensor).copy()
    flat = values.reshape(-1)
    flat[int(np.argmax(np.abs(flat)))] *= scale
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    save(model, str(out))
    return out
