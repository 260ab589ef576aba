"""A recording stand-in for the ``tensorrt`` module (TensorRT cannot be installed here).

``FakeTensorRT(version)`` mimics the API shape of one release: 8.5/8.6 (no ``IProgressMonitor``,
8.5 also without ``builder_optimization_level``) or 10.x. Every public attribute that the runtime
reads or writes on any stand-in object, class or module is recorded in ``names``, and every call
in ``calls``, so tests can assert what TensorRT was asked to do and the contract test can check
each name against the real bindings' identifiers. It reads the ONNX file (with ``onnx``) to give
the network real inputs and outputs, and "builds" a JSON blob describing the engine, which its
``Runtime`` deserializes.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path
from typing import Any

from app.backends.onnx_model import inspect_model

_CURRENT: list[FakeTensorRT] = []


def _external(obj: Any) -> bool:
    """Whether the access comes from the runtime's code, and not on the runtime's own subclass
    instance (a calibrator touching its own fields is not a TensorRT name)."""
    frame = sys._getframe(2)
    while frame.f_code.co_name in {"__getattribute__", "__setattr__", "_record"} and \
            frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__") != __name__ and frame.f_locals.get("self") is not obj


#: The stand-in's own knobs and logs: not TensorRT names, never recorded.
_OWN = {"names", "calls", "parser_errors", "fail_build", "corrupt_engine", "dla_cores", "batches",
        "on_step", "version", "has_monitor", "flags_built"}


def _record(obj: Any, name: str) -> None:
    """Record ``name`` if the runtime (not this stand-in or a test's knob) touched it."""
    if _CURRENT and (not name.startswith("_") or name == "__version__") and name not in _OWN \
            and _external(obj):
        object.__getattribute__(_CURRENT[-1], "names").add(name)


def _callback(obj: Any, name: str) -> Any:
    """A method TensorRT calls on the runtime's subclass: its name is part of the contract."""
    object.__getattribute__(_CURRENT[-1], "names").add(name)
    return object.__getattribute__(obj, name)


class _Meta(type):
    def __getattribute__(cls, name: str) -> Any:
        _record(cls, name)
        return super().__getattribute__(name)


class Recorded(metaclass=_Meta):
    def __getattribute__(self, name: str) -> Any:
        _record(self, name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _record(self, name)
        if _CURRENT and not name.startswith("_") and _external(self):
            _CURRENT[-1].calls.append(("set", name, value))
        object.__setattr__(self, name, value)


class Member(int):
    """An enum member: an int with a name, like pybind11's enums."""

    def __new__(cls, name: str, value: int) -> Member:
        obj = super().__new__(cls, value)
        obj.name = name  # type: ignore[attr-defined]
        return obj

    def __repr__(self) -> str:
        return self.name  # type: ignore[attr-defined,no-any-return]


def _enum(name: str, *members: str) -> type:
    return _Meta(name, (Recorded,), {m: Member(m, i) for i, m in enumerate(members)})


Severity = _enum("Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
BuilderFlag = _enum("BuilderFlag", "FP16", "INT8", "DEBUG", "GPU_FALLBACK")
MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE", "DLA_MANAGED_SRAM")
NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH")
DeviceType = _enum("DeviceType", "GPU", "DLA")
TensorIOMode = _enum("TensorIOMode", "NONE", "INPUT", "OUTPUT")
DataType = _enum("DataType", "FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64")
_DTYPE = {"float32": DataType.FLOAT, "float16": DataType.HALF, "int64": DataType.INT64,
          "int32": DataType.INT32, "bool": DataType.BOOL}


class ILogger(Recorded):
    Severity = Severity

    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2(Recorded):
    def __init__(self) -> None:
        pass


class IProgressMonitor(Recorded):
    def __init__(self) -> None:
        pass


class ParserError(Recorded):
    def __init__(self, code: int, node: int, desc: str) -> None:
        self._c, self._n, self._d = code, node, desc

    def code(self) -> int:
        return self._c

    def node(self) -> int:
        return self._n

    def desc(self) -> str:
        return self._d


class Tensor(Recorded):
    def __init__(self, name: str, shape: tuple[int, ...], dtype: Member) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class Network(Recorded):
    def __init__(self, flags: int) -> None:
        self._flags = flags
        self._inputs: list[Tensor] = []
        self._outputs: list[Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, i: int) -> Tensor:
        return self._inputs[i]


def _tensor(info: Any) -> Tensor:
    return Tensor(info.name, tuple(d if isinstance(d, int) else -1 for d in info.dims),
                  _DTYPE[info.dtype])


class OnnxParser(Recorded):
    def __init__(self, network: Network, logger: ILogger) -> None:
        self._network, self._errors = network, []

    def parse_from_file(self, path: str) -> bool:
        fake = _CURRENT[-1]
        fake.calls.append(("parse_from_file", path))
        if fake.parser_errors:
            self._errors = [ParserError(*e) for e in fake.parser_errors]
            return False
        model = inspect_model(Path(path))
        self._network._inputs = [_tensor(t) for t in model.inputs]
        self._network._outputs = [_tensor(t) for t in model.outputs]
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, i: int) -> ParserError:
        return self._errors[i]


class Profile(Recorded):
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Any, Any, Any]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        _CURRENT[-1].calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
        self._shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class TimingCacheObj(Recorded):
    def __init__(self, blob: bytes) -> None:
        self._blob = bytes(blob)

    def combine(self, other: TimingCacheObj, ignore_mismatch: bool) -> bool:
        _CURRENT[-1].calls.append(("combine", other._blob))
        self._blob += b"+" + other._blob
        return True

    def serialize(self) -> bytes:
        return self._blob


class BuilderConfig(Recorded):
    def __init__(self, has_opt_level: bool) -> None:
        self._has_opt_level = has_opt_level
        self._flags: set[str] = set()
        self._profiles: list[Profile] = []
        self._timing: TimingCacheObj | None = None
        self.int8_calibrator: Any = None
        self.DLA_core = -1
        self.default_device_type = DeviceType.GPU

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "builder_optimization_level" and not self._has_opt_level:
            raise AttributeError("builder_optimization_level does not exist before TensorRT 8.6")
        if name == "progress_monitor" and not _CURRENT[-1].has_monitor:
            raise AttributeError("progress_monitor does not exist before TensorRT 10")
        super().__setattr__(name, value)

    def set_memory_pool_limit(self, pool: Member, size: int) -> None:
        _CURRENT[-1].calls.append(("set_memory_pool_limit", pool.name, size))  # type: ignore[attr-defined]

    def set_flag(self, flag: Member) -> None:
        self._flags.add(flag.name)  # type: ignore[attr-defined]

    def add_optimization_profile(self, profile: Profile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, blob: bytes) -> TimingCacheObj:
        _CURRENT[-1].calls.append(("create_timing_cache", bytes(blob)))
        return TimingCacheObj(blob)

    def set_timing_cache(self, cache: TimingCacheObj, ignore_mismatch: bool) -> bool:
        self._timing = cache
        return True

    def get_timing_cache(self) -> TimingCacheObj | None:
        return self._timing


class Builder(Recorded):
    def __init__(self, logger: ILogger) -> None:
        self._logger = logger

    @property
    def num_DLA_cores(self) -> int:
        return _CURRENT[-1].dla_cores

    def create_network(self, flags: int) -> Network:
        _CURRENT[-1].calls.append(("create_network", flags))
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig(_CURRENT[-1].version >= (8, 6))

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
        fake = _CURRENT[-1]
        fake.calls.append(("build", sorted(config._flags)))
        monitor = getattr(config, "progress_monitor", None) if fake.has_monitor else None
        if monitor is not None:
            _callback(monitor, "phase_start")("Building engine", None, 4)
            for step in range(4):
                if not _callback(monitor, "step_complete")("Building engine", step):
                    return None
                if fake.on_step is not None:
                    fake.on_step(step)
            _callback(monitor, "phase_finish")("Building engine")
        calib = config.int8_calibrator
        if calib is not None:
            assert _callback(calib, "get_batch_size")() == 1
            if _callback(calib, "read_calibration_cache")() is None:
                names = [t.name for t in network._inputs]
                while _callback(calib, "get_batch")(names) is not None:
                    fake.batches += 1
                table = b"calibration-table-" + str(fake.batches).encode()
                _callback(calib, "write_calibration_cache")(table)
        if fake.fail_build:
            _callback(self._logger, "log")(Severity.ERROR, "out of memory while building")
            return None
        if config._timing is not None:
            config._timing._blob += b"[timings]"
        shapes = {name: [list(s) for s in p] for prof in config._profiles for name, p in prof._shapes.items()}
        return json.dumps({
            "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],  # type: ignore[attr-defined]
            "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],  # type: ignore[attr-defined]
            "profiles": shapes, "flags": sorted(config._flags), "dla": config.DLA_core,
        }).encode()


class Context(Recorded):
    def __init__(self, engine: Engine) -> None:
        self._engine, self._shapes = engine, {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        shape = self._engine._tensors[name][1]
        first = next(iter(self._shapes.values()), shape)
        return tuple(first[i] if d == -1 and i < len(first) else d for i, d in enumerate(shape))

    def execute_async_v3(self, stream: int) -> bool:
        _CURRENT[-1].calls.append(("execute_async_v3", stream))
        return True


class Engine(Recorded):
    def __init__(self, doc: dict[str, Any]) -> None:
        self._order = [t[0] for t in doc["inputs"] + doc["outputs"]]
        self._inputs = {t[0] for t in doc["inputs"]}
        self._tensors = {t[0]: t for t in doc["inputs"] + doc["outputs"]}
        self._profiles = doc["profiles"]

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    def get_tensor_name(self, i: int) -> str:
        return self._order[i]

    def get_tensor_mode(self, name: str) -> Member:
        return TensorIOMode.INPUT if name in self._inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Member:
        return getattr(DataType, self._tensors[name][2])  # type: ignore[no-any-return]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name][1])

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self._profiles[name]]

    def create_execution_context(self) -> Context:
        return Context(self)


class Runtime(Recorded):
    def __init__(self, logger: ILogger) -> None:
        pass

    def deserialize_cuda_engine(self, blob: Any) -> Engine | None:
        if _CURRENT[-1].corrupt_engine:
            return None
        return Engine(json.loads(bytes(blob)))


class FakeTensorRT(Recorded):
    """The module. Knobs: parser_errors, fail_build, dla_cores, corrupt_engine, on_step."""

    def __init__(self, version: str) -> None:
        self.__version__ = version
        self.version = tuple(int(p) for p in version.split(".")[:2])
        self.has_monitor = self.version >= (10, 0)
        self.names: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.parser_errors: list[tuple[int, int, str]] = []
        self.fail_build = False
        self.corrupt_engine = False
        self.dla_cores = 0
        self.batches = 0
        self.on_step: Any = None
        for cls in (ILogger, IInt8EntropyCalibrator2, Builder, OnnxParser, Runtime, BuilderFlag,
                    MemoryPoolType, NetworkDefinitionCreationFlag, DeviceType, TensorIOMode, DataType):
            object.__setattr__(self, cls.__name__, cls)
        if self.has_monitor:
            object.__setattr__(self, "IProgressMonitor", IProgressMonitor)

    def __enter__(self) -> FakeTensorRT:
        _CURRENT.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _CURRENT.remove(self)

    def flags_built(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "build"][-1]


class FakeCudart:
    """Stand-in for ``cuda.bindings.runtime``: tuple-returning calls, recorded."""

    class cudaError_t:
        cudaSuccess = 0

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.allocated: dict[int, int] = {}
        self.copies: list[tuple[int, int]] = []
        self.freed: list[int] = []
        self._next = 0x1000

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        ptr, self._next = self._next, self._next + n + 256
        self.allocated[ptr] = n
        return (0, ptr)

    def cudaMemcpy(self, dst: int, src: int, n: int, kind: int) -> tuple[int]:
        self.copies.append((kind, n))
        if kind == self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            ctypes.memset(dst, 0, n)  # the stand-in's "device" holds zeros
        return (0,)

    def cudaFree(self, ptr: int) -> tuple[int]:
        self.freed.append(ptr)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return (0, 7)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (0,)
