"""Loading an ONNX model through the safe reader: a FIFO or a device at the model's path is a
clear error naming it, never a hang; a link to a real model (a mounted volume) still loads."""

from __future__ import annotations

import pytest

from app.backends.onnx_model import inspect_model, load_onnx
from app.cache.fsread import UnsafeFileError
from app.errors import ModelDataError
from tests.helpers import plant, within


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "chardev"])
def test_a_planted_model_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "model.onnx"
    plant(path, kind, tmp_path / "outside")
    with pytest.raises(ModelDataError, match=r"model\.onnx is not a readable ONNX model .*(FIFO|device)"):
        within(2, lambda: inspect_model(path, "m"))
    with pytest.raises(UnsafeFileError):
        within(2, lambda: load_onnx(path, external_data=False))


def test_a_link_to_a_model_is_followed(tmp_path, corpus):
    link = tmp_path / "linked.onnx"
    link.symlink_to(corpus["aliked"])
    assert [t.name for t in inspect_model(link, "aliked").inputs] == \
        [t.name for t in inspect_model(corpus["aliked"], "aliked").inputs]


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "chardev"])
def test_planted_external_data_is_refused_at_once(tmp_path, kind):
    """onnx opens a model's external data files itself; the pinned onnx (constraints files)
    refuses anything but a regular file there, which ``load_onnx`` relies on."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True,
              location="model.data", size_threshold=0)
    assert len(load_onnx(path).graph.initializer[0].raw_data) == 64
    plant(tmp_path / "model.data", kind, tmp_path / "outside")
    with pytest.raises(ModelDataError, match=r"model\.onnx is not a readable ONNX model .*model\.data"):
        within(5, lambda: inspect_model(path, "m"))
