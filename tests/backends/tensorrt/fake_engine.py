"""The run half of the TensorRT stand-in: ``Runtime``, the engine and its execution context.
See :mod:`tests.backends.tensorrt.fake_tensorrt`. The context checks every I/O buffer against
the size the real engine would read or write, and records an overrun instead of corrupting
memory as a real GPU would. With ``FakeTensorRT.computes`` it also computes: the inputs read
from device memory, the parsed ONNX model run on ONNX Runtime, every output written to its
buffer, a data-dependent one through the output allocator in the shape it came out in."""

from __future__ import annotations

import ctypes
import json
from typing import Any

from tests.backends.tensorrt.fake_tensorrt import ITEM, FakeTensorRT, Strict, get

_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8"}


class Runtime(Strict):
    _settable = frozenset({"DLA_core"})

    def __init__(self, fake: FakeTensorRT, logger: Any) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_logger", fake.logger_for(self, logger))
        object.__setattr__(self, "DLA_core", -1)

    def deserialize_cuda_engine(self, blob: Any) -> ICudaEngine | None:
        fake = get(self, "_fake")
        fake.calls.append(("deserialize", get(self, "DLA_core"), fake.gpu.current()))
        if fake.corrupt_engine:
            fake.log(get(self, "_logger"), "ERROR", "1: [stdArchiveReader.cpp::StdArchiveReader::32] "
                     "Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG "
                     "failed.Magic tag does not match)")
            return None
        doc = json.loads(bytes(memoryview(blob)))
        missing = [p for p in doc.get("plugins", []) if p not in fake.plugin_registry]
        if missing:  # a plugin layer needs its creator registered in this process
            fake.log(get(self, "_logger"), "ERROR", f"getPluginCreator could not find plugin: "
                     f"{missing[0]} version: 1")
            fake.log(get(self, "_logger"), "ERROR", f"Cannot deserialize plugin {missing[0]}")
            return None
        return ICudaEngine(fake, doc)


class ICudaEngine(Strict):
    def __init__(self, fake: FakeTensorRT, doc: dict[str, Any]) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_doc", doc)
        object.__setattr__(self, "_inputs", {t[0] for t in doc["inputs"]})
        object.__setattr__(self, "_tensors", {t[0]: t for t in doc["inputs"] + doc["outputs"]})

    @property
    def num_io_tensors(self) -> int:
        return len(get(self, "_tensors"))

    def get_tensor_name(self, index: int) -> str:
        return list(get(self, "_tensors"))[index]

    def get_tensor_mode(self, name: str) -> Any:
        modes = get(get(self, "_fake").module, "TensorIOMode")
        return modes.INPUT if name in get(self, "_inputs") else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(get(get(self, "_fake").module, "DataType"), get(self, "_tensors")[name][2])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in get(self, "_tensors")[name][1])

    def get_tensor_location(self, name: str) -> Any:
        locations = get(get(self, "_fake").module, "TensorLocation")
        return locations.HOST if name in get(self, "_fake").host_tensors else locations.DEVICE

    def is_shape_inference_io(self, name: str) -> bool:
        return name in get(self, "_fake").host_tensors

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in get(self, "_doc")["profiles"][name]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(get(self, "_fake"), self)

    def create_engine_inspector(self) -> EngineInspector:
        return EngineInspector(get(self, "_fake"), get(self, "_doc"))


class EngineInspector(Strict):
    """Layer names only, unless the engine was built with detailed profiling verbosity."""

    def __init__(self, fake: FakeTensorRT, doc: dict[str, Any]) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_doc", doc)

    def get_engine_information(self, layer_format: Any) -> str:
        doc = get(self, "_doc")
        if layer_format.name != "JSON":
            return "\n".join(layer["Name"] for layer in doc["layers"])
        detailed = doc["verbosity"] == "DETAILED"
        return json.dumps({"Layers": [layer if detailed else layer["Name"]
                                      for layer in doc["layers"]],
                           "Bindings": [t[0] for t in doc["inputs"] + doc["outputs"]]})


def _volume(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


class IExecutionContext(Strict):
    def __init__(self, fake: FakeTensorRT, engine: ICudaEngine) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_shapes", {})
        object.__setattr__(self, "_addresses", {})
        object.__setattr__(self, "_allocators", {})

    def _resolved(self, name: str, data_dependent: int) -> tuple[int, ...]:
        shapes, dims = get(self, "_shapes"), get(get(self, "_engine"), "_tensors")[name][1]
        if name in get(get(self, "_engine"), "_inputs"):
            return tuple(shapes.get(name, [d if isinstance(d, int) else -1 for d in dims]))
        return tuple(d if isinstance(d, int) else shapes[d[0]][d[1]] if d and d[0] in shapes
                     else -1 if d else data_dependent for d in dims)

    def _bound(self) -> int:
        """The most elements a data-dependent axis can have: the largest input's volume."""
        return max((_volume(s) for s in get(self, "_shapes").values()), default=0)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        profile = get(get(self, "_engine"), "_doc")["profiles"].get(name)
        shape = tuple(shape)
        if profile and not all(lo <= s <= hi
                               for s, lo, hi in zip(shape, profile[0], profile[2], strict=True)):
            return False
        get(self, "_shapes")[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._resolved(name, -1)

    def get_max_output_size(self, name: str) -> int:
        engine = get(self, "_engine")
        unset = any(-1 in self._resolved(n, 0) for n in get(engine, "_inputs"))
        if name in get(engine, "_inputs") or unset:
            return -1
        return _volume(self._resolved(name, self._bound())) * ITEM[get(engine, "_tensors")[name][2]][0]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        get(self, "_addresses")[name] = int(ptr)
        return True

    def set_output_allocator(self, name: str, allocator: Any) -> bool:
        get(self, "_allocators")[name] = allocator
        return True

    def _computed(self) -> dict[str, Any]:
        """The parsed model's outputs on ONNX Runtime for the inputs in device memory; an FP16
        engine's floats rounded through float16, then changed by ``fp16_outputs``."""
        import numpy as np
        import onnxruntime as ort

        fake, engine = get(self, "_fake"), get(self, "_engine")
        doc, tensors, shapes = get(engine, "_doc"), get(engine, "_tensors"), get(self, "_shapes")
        session = ort.InferenceSession(doc["onnx"], providers=["CPUExecutionProvider"])
        feeds = {}
        for tensor in session.get_inputs():
            dtype, shape = np.dtype(ITEM[tensors[tensor.name][2]][1]), shapes[tensor.name]
            data, _ = fake.gpu.read(get(self, "_addresses")[tensor.name],
                                    _volume(shape) * dtype.itemsize)
            feeds[tensor.name] = np.frombuffer(data, dtype).reshape(shape).astype(
                _ONNX_TYPES[tensor.type])
        half, values = "FP16" in doc["flags"], {}
        for tensor, value in zip(session.get_outputs(), session.run(None, feeds), strict=True):
            if half and value.dtype == np.float32:
                value = value.astype(np.float16).astype(np.float32)
            if half and tensor.name in fake.fp16_outputs:
                value = fake.fp16_outputs[tensor.name](value)
            values[tensor.name] = np.ascontiguousarray(value, ITEM[tensors[tensor.name][2]][1])
        return values

    def execute_async_v3(self, stream: int) -> bool:
        fake, engine = get(self, "_fake"), get(self, "_engine")
        fake.calls.append(("execute_async_v3", stream))
        fake.calls.append(("execute_device", fake.gpu.current()))
        values = self._computed() if fake.computes else {}
        for name, (_, _, dtype) in get(engine, "_tensors").items():
            ptr = get(self, "_addresses").get(name)
            value = values.get(name)
            # data-dependent: what it computed, else some of the bound
            shape = tuple(value.shape) if value is not None else self._resolved(
                name, self._bound() // 2)
            allocator = get(self, "_allocators").get(name)
            if ptr is None and allocator is not None and -1 not in shape:
                # "each output must have a non-null address or an IOutputAllocator"
                ptr = fake.callback(allocator, "IOutputAllocator", "reallocate_output", 0, name, 0,
                                    _volume(shape) * ITEM[dtype][0], 256)
                fake.callback(allocator, "IOutputAllocator", "notify_shape", None, name, shape)
            if name in fake.host_tensors and fake.gpu.size_of(ptr or 0):
                fake.calls.append(("device_pointer_for_host_tensor", name))
                return False
            if name in fake.host_tensors:
                if name not in get(engine, "_inputs") and ptr and -1 not in shape:
                    ctypes.memset(ptr, 0, _volume(shape) * ITEM[dtype][0])  # it writes host memory
                continue
            if not ptr or -1 in shape:
                fake.calls.append(("enqueue_error", name))
                return False
            need, have = _volume(shape) * ITEM[dtype][0], fake.gpu.size_of(ptr)
            if have < need:
                fake.calls.append(("overrun", name, have, need))
            elif value is not None and need:
                fake.gpu.cudaMemcpy(ptr, value.ctypes.data, need,
                                    fake.gpu.cudaMemcpyKind.cudaMemcpyHostToDevice)
        return True
