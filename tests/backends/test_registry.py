"""Backend selection: auto picks TensorRT exactly when it is importable and a GPU is present."""

from __future__ import annotations

import pytest

from app.backends import registry
from app.errors import BackendUnavailableError
from app.types import HostCapabilities


@pytest.mark.parametrize(("importable", "gpu", "expected"), [
    (True, True, "tensorrt"), (True, False, "onnxruntime"),
    (False, True, "onnxruntime"), (False, False, "onnxruntime")])
def test_auto(monkeypatch, importable, gpu, expected):
    monkeypatch.setattr(registry, "tensorrt_importable", lambda: importable)
    assert registry.resolve_backend_name("auto", gpu) == expected
    assert registry.resolve_backend_name("onnxruntime", True) == "onnxruntime"


def test_tensorrt_absent_is_unavailable_not_a_crash():
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        registry.create_backend("tensorrt", HostCapabilities(87, "6.2", "10.3"))


def test_unknown_backend():
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        registry.create_backend("openvino", HostCapabilities(0, "none", "none"))
