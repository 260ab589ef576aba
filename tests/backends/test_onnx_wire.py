"""read_interface (an ONNX model's inputs and outputs from its protobuf encoding, without the onnx
package) against inspect_model (onnx.load and the checker) on real models built by code."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.backends.onnx_model import inspect_model
from app.backends.onnx_wire import _DTYPES, read_interface
from app.errors import ModelDataError


@pytest.mark.parametrize("name", ["dinov2_vpr", "lightglue", "aliked"])
def test_the_demo_models_read_as_onnx_reads_them(corpus, name):
    assert read_interface(corpus[name]) == inspect_model(corpus[name])


def _odd_model(path):
    """Inputs of several types with fixed, named and unknown dims, an initializer that is also
    a graph input (a default value), a sparse initializer, a large weight and two opsets."""
    weight = numpy_helper.from_array(np.ones((512, 1024), np.float32), "big")
    default = numpy_helper.from_array(np.zeros((1,), np.int64), "k")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([2.0], np.float32), "sp"),
                                       numpy_helper.from_array(np.array([0], np.int64), "sp_idx"), [4])
    nodes = [helper.make_node("Cast", ["half"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["f"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["big"], ["b"], keepdims=0),
             helper.make_node("Add", ["s", "b"], ["sb"]),
             helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["sp"], ["spsum"], keepdims=0),
             helper.make_node("Add", ["sb", "kf"], ["o1"]),
             helper.make_node("Identity", ["flag"], ["o2"]),
             helper.make_node("Add", ["o1", "spsum"], ["o3"])]
    unknown = helper.make_tensor_value_info("flag", TensorProto.BOOL, [2, None])
    graph = helper.make_graph(
        nodes, "odd",
        [helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["batch", 3]), unknown,
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("o2", TensorProto.BOOL, [2, "w"]),
         helper.make_tensor_value_info("o3", TensorProto.FLOAT, [1])],
        [weight, default], sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_types_dims_initializers_and_opsets_read_as_onnx_reads_them(tmp_path):
    path = _odd_model(tmp_path / "odd.onnx")
    got = read_interface(path)
    assert got == inspect_model(path)
    assert [t.name for t in got.inputs] == ["half", "flag"]  # "k" has a default: not an input
    assert [(t.dtype, t.dims) for t in got.inputs] == [("float16", ("batch", 3)), ("bool", (2, None))]
    assert got.opset == 17


def test_every_onnx_type_maps_to_the_dtype_onnx_gives():
    for name, number in TensorProto.DataType.items():
        try:
            want = helper.tensor_dtype_to_np_dtype(number).name
        except (KeyError, TypeError, ValueError):
            continue  # UNDEFINED
        assert _DTYPES.get(number) == want, name


@pytest.mark.parametrize("damage", ["truncated", "text", "empty"])
def test_a_file_that_is_no_onnx_model_is_a_model_data_error(tmp_path, corpus, damage):
    path = tmp_path / "m.onnx"
    raw = corpus["dinov2_vpr"].read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "text": b"not a model\n" * 10,
                      "empty": b""}[damage])
    with pytest.raises(ModelDataError, match=r"dinov2: .*m\.onnx"):
        read_interface(path, "dinov2")
