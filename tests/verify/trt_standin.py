"""A computing stand-in for TensorRT's runtime API, for the accuracy gate's TensorRT runner.

TensorRT cannot be installed here, so this stand-in mimics the runtime half of the bindings
(``Runtime``, ``ICudaEngine``, ``IExecutionContext``, enums, ``ILogger``) and records every
public name the runner touches, for the contract check against the real bindings. Its
"serialized engine" is the ONNX model's bytes; executing runs them on ONNX Runtime over host
memory that stands in for device buffers (``HostBuffers``). ``degrade="fp16"`` rounds the
outputs through float16, like an engine whose layers ran in half precision.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import onnxruntime as ort

NAMES: set[str] = set()

_NP = {"float32": "FLOAT", "float16": "HALF", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
       "int8": "INT8", "uint8": "UINT8"}


class Recorded:
    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            NAMES.add(name)
        return object.__getattribute__(self, name)


class Member(int):
    def __new__(cls, name: str, value: int) -> Member:
        obj = super().__new__(cls, value)
        obj.name = name  # type: ignore[attr-defined]
        return obj


class _Enum(Recorded):
    def __init__(self, *names: str) -> None:
        for i, name in enumerate(names):
            object.__setattr__(self, name, Member(name, i))


class ILogger:
    Severity = type("Severity", (), {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3,
                                     "VERBOSE": 4})

    def __init__(self) -> None:
        pass


class Context(Recorded):
    def __init__(self, engine: Engine) -> None:
        self._engine, self._shapes, self._addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self._addresses[name] = ptr
        return True

    def _feeds(self, zeros: bool) -> dict[str, Any]:
        feeds = {}
        for t in self._engine._session.get_inputs():
            dtype, shape = self._engine._dtypes[t.name], self._shapes[t.name]
            array = np.zeros(shape, dtype)
            if not zeros:
                ctypes.memmove(array.ctypes.data, self._addresses[t.name], array.nbytes)
            feeds[t.name] = array
        return feeds

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        outputs = self._engine._session.run([name], self._feeds(zeros=True))
        return tuple(outputs[0].shape)

    def execute_async_v3(self, stream: int) -> bool:
        names = [o.name for o in self._engine._session.get_outputs()]
        values = self._engine._session.run(names, self._feeds(zeros=False))
        for name, value in zip(names, values, strict=True):
            if self._engine._degrade == "fp16" and value.dtype == np.float32:
                value = value.astype(np.float16).astype(np.float32)
            value = np.ascontiguousarray(value, self._engine._dtypes[name])
            ctypes.memmove(self._addresses[name], value.ctypes.data, value.nbytes)
        return True


class Engine(Recorded):
    def __init__(self, trt: StandinTensorRT, onnx: bytes, degrade: str | None) -> None:
        self._trt, self._degrade = trt, degrade
        self._session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        tensors = [*self._session.get_inputs(), *self._session.get_outputs()]
        self._names = [t.name for t in tensors]
        self._inputs = {t.name for t in self._session.get_inputs()}
        self._dtypes = {t.name: np.dtype({"tensor(float)": "float32", "tensor(int64)": "int64",
                                          "tensor(bool)": "bool", "tensor(float16)": "float16"}[t.type])
                        for t in tensors}

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> Member:
        modes = object.__getattribute__(self._trt, "TensorIOMode")
        return modes.INPUT if name in self._inputs else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> Member:
        return getattr(object.__getattribute__(self._trt, "DataType"), _NP[self._dtypes[name].name])

    def create_execution_context(self) -> Context:
        return Context(self)


class Runtime(Recorded):
    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def deserialize_cuda_engine(self, blob: Any) -> Engine | None:
        trt = _CURRENT[-1]
        try:
            return Engine(trt, bytes(blob), trt._degrade)
        except Exception:
            self._logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: magic tag")
            return None


_CURRENT: list[StandinTensorRT] = []


class StandinTensorRT(Recorded):
    """The module object: ``StandinTensorRT("10.3.0")`` used as the runner's ``trt``."""

    def __init__(self, version: str, degrade: str | None = None) -> None:
        object.__setattr__(self, "__version__", version)
        object.__setattr__(self, "_degrade", degrade)
        object.__setattr__(self, "ILogger", ILogger)
        object.__setattr__(self, "Runtime", Runtime)
        object.__setattr__(self, "TensorIOMode", _Enum("INPUT", "OUTPUT", "NONE"))
        object.__setattr__(self, "DataType", _Enum(*sorted(set(_NP.values()))))
        _CURRENT.append(self)


class HostBuffers:
    """Host memory standing in for device buffers: same calls as DeviceMemory."""

    def __init__(self) -> None:
        self.buffers: dict[int, Any] = {}
        self.closed = False

    def alloc(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(max(nbytes, 1))
        self.buffers[ctypes.addressof(buffer)] = buffer
        return ctypes.addressof(buffer)

    def upload(self, ptr: int, array: Any) -> None:
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def download(self, array: Any, ptr: int) -> None:
        ctypes.memmove(array.ctypes.data, ptr, array.nbytes)

    def stream(self) -> int:
        return 0

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.buffers.clear()
        self.closed = True
