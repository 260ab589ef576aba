"""A computing stand-in for TensorRT's runtime API, for the accuracy gate's TensorRT runner
(:mod:`app.backends.tensorrt.runner`).

TensorRT cannot be installed here, so this stand-in mimics the runtime half of the bindings
(``Runtime``, ``ICudaEngine``, ``IExecutionContext``, enums, ``ILogger``) and records every
public name the runner touches, for the contract check against the real bindings. Its
"serialized engine" is the ONNX model's bytes; executing runs them on ONNX Runtime over host
memory that stands in for device buffers (``HostBuffers``). ``degrade="fp16"`` rounds the
outputs through float16, like an engine whose layers ran in half precision; ``fp16_outputs``
maps an output to the value it takes under FP16 instead (a NonZero count that moved).

As the real runtime: an output whose size depends on the data (an ONNX dim name that no input
has: NonZero's count) has -1 dimensions, and execution fails unless it has an address or an
IOutputAllocator, whose ``reallocate_output`` and ``notify_shape`` it calls (TensorRT v10.3.0
include/NvInferRuntime.h:3988-3998); an engine of a model with DeformConv holds the
ModulatedDeformConv2d plugin and deserializes only after ``init_libnvinfer_plugins`` in this
process; ``DLA_core`` and the current device (``gpu``) are recorded at deserialization and
execution; ``host_tensors`` are HOST-located and refuse a device pointer.
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


class IOutputAllocator:
    def __init__(self) -> None:
        pass


class Context(Recorded):
    def __init__(self, engine: Engine) -> None:
        self._engine, self._shapes, self._addresses, self._allocators = engine, {}, {}, {}

    def set_output_allocator(self, name: str, allocator: Any) -> bool:
        self._allocators[name] = allocator
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self._addresses[name] = ptr
        return True

    def _feeds(self, zeros: bool) -> dict[str, Any]:
        feeds = {}
        for t in self._engine._session.get_inputs():
            dtype, shape = self._engine._trt_dtypes[t.name], self._shapes[t.name]
            array = np.zeros(shape, dtype)
            if not zeros:
                ctypes.memmove(array.ctypes.data, self._addresses[t.name], array.nbytes)
            feeds[t.name] = array.astype(self._engine._dtypes[t.name])
        return feeds

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        outputs = self._engine._session.run([name], self._feeds(zeros=True))
        return tuple(-1 if i in self._engine._data_dependent.get(name, ()) else d
                     for i, d in enumerate(outputs[0].shape))

    def execute_async_v3(self, stream: int) -> bool:
        trt, engine = self._engine._trt, self._engine
        trt._calls.append(("execute", trt._gpu.current() if trt._gpu else 0))
        for name in engine._host_tensors & set(self._addresses):
            if self._addresses[name] in trt._device_pointers:
                trt._calls.append(("device_pointer_for_host_tensor", name))
                return False
        names = [o.name for o in engine._session.get_outputs()]
        values = engine._session.run(names, self._feeds(zeros=False))
        for name, value in zip(names, values, strict=True):
            if name in trt._fp16_outputs and engine._degrade == "fp16":
                value = trt._fp16_outputs[name]
            elif engine._degrade == "fp16" and value.dtype == np.float32:
                value = value.astype(np.float16).astype(np.float32)
            value = np.ascontiguousarray(value, engine._trt_dtypes[name])
            ptr = self._addresses.get(name)
            if ptr is None and name in self._allocators:
                allocator = self._allocators[name]
                ptr = allocator.reallocate_output(name, 0, max(value.nbytes, 1), 256)
                allocator.notify_shape(name, tuple(value.shape))
            if not ptr:
                trt._calls.append(("enqueue_error", name))
                return False
            ctypes.memmove(ptr, value.ctypes.data, value.nbytes)
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
        # TensorRT 8 has no INT64: its ONNX parser casts such tensors to INT32
        eight = str(object.__getattribute__(trt, "__version__")).startswith("8.")
        self._trt_dtypes = {n: np.dtype("int32") if eight and d == np.int64 else d
                            for n, d in self._dtypes.items()}
        named = {d for t in self._session.get_inputs() for d in t.shape if isinstance(d, str)}
        self._data_dependent = {t.name: {i for i, d in enumerate(t.shape)
                                         if isinstance(d, str) and d not in named}
                                for t in self._session.get_outputs()}
        self._host_tensors = set(trt._host_tensors)

    def get_tensor_location(self, name: str) -> Member:
        locations = object.__getattribute__(self._trt, "TensorLocation")
        return locations.HOST if name in self._host_tensors else locations.DEVICE

    def is_shape_inference_io(self, name: str) -> bool:
        return name in self._host_tensors

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> Member:
        modes = object.__getattribute__(self._trt, "TensorIOMode")
        return modes.INPUT if name in self._inputs else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> Member:
        return getattr(object.__getattribute__(self._trt, "DataType"),
                       _NP[self._trt_dtypes[name].name])

    def create_execution_context(self) -> Context:
        return Context(self)


class Runtime(Recorded):
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.DLA_core = -1

    def deserialize_cuda_engine(self, blob: Any) -> Engine | None:
        trt = _CURRENT[-1]
        trt._calls.append(("deserialize", self.DLA_core, trt._gpu.current() if trt._gpu else 0))
        if b"DeformConv" in bytes(blob) and not trt._plugins:
            self._logger.log(ILogger.Severity.ERROR, "getPluginCreator could not find plugin: "
                             "ModulatedDeformConv2d version: 1")
            return None
        try:
            return Engine(trt, bytes(blob), trt._degrade)
        except Exception:
            self._logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: magic tag")
            return None


_CURRENT: list[StandinTensorRT] = []


class StandinTensorRT(Recorded):
    """The module object: ``StandinTensorRT("10.3.0")`` used as the runner's ``trt``."""

    def __init__(self, version: str, degrade: str | None = None, *, gpu: Any = None,
                 host_tensors: tuple[str, ...] = (),
                 fp16_outputs: dict[str, Any] | None = None) -> None:
        for name, value in {"__version__": version, "_degrade": degrade, "ILogger": ILogger,
                            "Runtime": Runtime, "IOutputAllocator": IOutputAllocator,
                            "TensorIOMode": _Enum("INPUT", "OUTPUT", "NONE"),
                            "TensorLocation": _Enum("DEVICE", "HOST"),
                            "DataType": _Enum(*sorted(set(_NP.values()))), "_gpu": gpu,
                            "_host_tensors": set(host_tensors), "_plugins": False, "_calls": [],
                            "_fp16_outputs": fp16_outputs or {}, "_device_pointers": set()}.items():
            object.__setattr__(self, name, value)
        _CURRENT.append(self)

    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        object.__setattr__(self, "_plugins", True)
        self._calls.append(("init_libnvinfer_plugins", namespace))
        return True


class HostBuffers:
    """Host memory standing in for device buffers: same calls as DeviceMemory."""

    def __init__(self, trt: StandinTensorRT | None = None) -> None:
        self.buffers: dict[int, Any] = {}
        self.closed = False
        self._trt = trt
        self.devices: list[int] = []  # the current device at each allocation

    def alloc(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(max(nbytes, 1))
        self.buffers[ctypes.addressof(buffer)] = buffer
        if self._trt is not None:
            self._trt._device_pointers.add(ctypes.addressof(buffer))
            gpu = self._trt._gpu
            self.devices.append(gpu.current() if gpu is not None else 0)
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
