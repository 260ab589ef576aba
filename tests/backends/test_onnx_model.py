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
