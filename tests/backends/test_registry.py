"""Backend selection: auto picks TensorRT exactly when it is installed and a GPU is present."""

from __future__ import annotations

import pytest

from app.backends import registry
from app.errors import BackendUnavailableError
from app.values import HostCapabilities, PrecisionMode


@pytest.mark.parametrize(("importable", "gpu", "expected"), [
    (True, True, "tensorrt"), (True, False, "onnxruntime"),
    (False, True, "onnxruntime"), (False, False, "onnxruntime")])
def test_auto(monkeypatch, importable, gpu, expected):
    monkeypatch.setattr(registry, "tensorrt_package",
                        lambda: "/site/tensorrt/__init__.py" if importable else None)
    assert registry.resolve_backend_name("auto", gpu) == expected
    assert registry.resolve_backend_name("onnxruntime", True) == "onnxruntime"


def test_tensorrt_absent_is_unavailable_not_a_crash():
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        registry.create_backend("tensorrt", HostCapabilities(87, "6.2", "10.3"))


def test_unknown_backend():
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        registry.create_backend("openvino", HostCapabilities(0, "none", "none"))


def test_every_backend_implements_the_whole_protocol_and_its_table_row():
    from app import InferenceRuntime
    from app.backends.onnxruntime import OnnxRuntimeBackend
    from app.backends.tensorrt.runtime import TensorRTRuntime

    host = HostCapabilities(87, "6.2", "10.3", "10.3.0.30", "Orin")
    made = {"onnxruntime": OnnxRuntimeBackend(host),
            "tensorrt": TensorRTRuntime(host, trt_module=object())}  # no TensorRT here
    assert set(made) == set(registry.BACKENDS)
    for name, backend in made.items():
        assert isinstance(backend, InferenceRuntime) and backend.name == name
        assert backend.artifact_name("m", PrecisionMode.FP16).startswith("m__")
        assert backend.version() and isinstance(backend.device_name(), str)
    assert registry.BACKENDS["tensorrt"].needs_gpu and not registry.BACKENDS["onnxruntime"].needs_gpu


def test_the_config_offers_exactly_the_registry_backends(tmp_path):
    from app.config import EngineInitConfig

    assert registry.BACKEND_NAMES == ("auto", "tensorrt", "onnxruntime")
    schema = EngineInitConfig.model_json_schema()
    assert schema["properties"]["backend"]["enum"] == list(registry.BACKEND_NAMES)
