"""A stand-in for the ``tensorrt`` module (TensorRT cannot be installed here), failing closed.

``FakeTensorRT(version)`` is the controller a test holds: knobs, the log of ``calls``, and
``module``, the namespace the runtime gets as ``tensorrt``. Every public name the runtime reads
or writes on the namespace, an enum, a class or an object must be an identifier of that
release's real bindings (:mod:`tests.backends.tensorrt.release_names`), else it raises
AttributeError as pybind11 would; assignments go only to properties the real class defines.
At construction every name the stand-in defines is checked against the real lists.

It behaves as the real bindings do where a naive stand-in would not: Python callbacks run
inside a wrapper that prints an exception and returns false ("no more batches", "cancel the
build"); the ONNX parser of 8.x maps INT64 to INT32 and every release maps DOUBLE to FLOAT;
outputs whose size depends on data have -1 dimensions; ``set_timing_cache`` returns False on a
cache from a device with other properties; a builder works on the current device of the
thread that created it (0 unless selected); TF32 is on by default; with DLA and GPU fallback,
an FP32 or dynamic network silently runs on the GPU. The engine is a JSON document that
:mod:`tests.backends.tensorrt.fake_engine` deserializes.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar

from tests.backends.tensorrt.fake_cuda import FakeCudart
from tests.backends.tensorrt.release_names import RELEASES, allowed

SEVERITY = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
ENUMS = {
    "BuilderFlag": ("FP16", "INT8", "DEBUG", "GPU_FALLBACK", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS"),
    "TensorLocation": ("DEVICE", "HOST"),
    "MemoryPoolType": ("WORKSPACE", "DLA_MANAGED_SRAM"),
    "NetworkDefinitionCreationFlag": ("EXPLICIT_BATCH",),
    "DeviceType": ("GPU", "DLA"),
    "TensorIOMode": ("NONE", "INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64"),
    "ProfilingVerbosity": ("LAYER_NAMES_ONLY", "NONE", "DETAILED"),
    "LayerInformationFormat": ("ONELINE", "JSON"),
}
#: bytes per element and numpy dtype of each DataType member
ITEM = {"FLOAT": (4, "float32"), "HALF": (2, "float16"), "INT8": (1, "int8"), "INT32": (4, "int32"),
        "BOOL": (1, "bool"), "UINT8": (1, "uint8"), "INT64": (8, "int64")}


class Member(int):
    """An enum member: an int with a name, like pybind11's arithmetic enums."""

    def __new__(cls, name: str, value: int) -> Member:
        obj = super().__new__(cls, value)
        obj.name = name  # type: ignore[attr-defined]
        return obj

    def __repr__(self) -> str:
        return self.name  # type: ignore[attr-defined,no-any-return]


class Strict:
    """Base of every stand-in object: a public name that the emulated release lacks is an
    AttributeError; only the names in ``_settable`` can be assigned (pybind11 properties)."""

    _settable: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, fake: FakeTensorRT, label: str = "") -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_label", label or type(self).__name__)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            object.__getattribute__(self, "_fake").touch(object.__getattribute__(self, "_label"), name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            fake, label = object.__getattribute__(self, "_fake"), object.__getattribute__(self, "_label")
            fake.touch(label, name)
            if name not in type(self)._settable:
                raise AttributeError(f"can't set attribute {name!r} of {label}")
            fake.calls.append(("set", f"{label}.{name}", value))
        object.__setattr__(self, name, value)


def get(obj: Any, name: str) -> Any:
    """The stand-in's own read of an object's field: not a name the runtime touched."""
    return object.__getattribute__(obj, name)


class Enum(Strict):
    def __init__(self, fake: FakeTensorRT, name: str, members: tuple[str, ...]) -> None:
        super().__init__(fake, name)
        for value, member in enumerate(members):
            if allowed(member, fake.__version__):
                object.__setattr__(self, member, Member(member, value))


class InterfaceMeta(type):
    """The classes the runtime subclasses (ILogger, calibrators, monitors): a name read on the
    stand-in class itself is checked; the runtime's subclasses keep their own names free."""

    def __getattribute__(cls, name: str) -> Any:
        own = type.__getattribute__(cls, "__dict__")
        if not name.startswith("_") and "_fake" in own:
            own["_fake"].touch(cls.__name__, name)
        return type.__getattribute__(cls, name)


def interface(fake: FakeTensorRT, name: str, **attrs: Any) -> type:
    def __init__(self: Any) -> None:
        pass

    return InterfaceMeta(name, (), {"_fake": fake, "__init__": __init__, **attrs})


class FakeTensorRT:
    """Knobs: parser_errors, fail_build, corrupt_engine, dla_cores, steps (of the monitored build
    phase, 10.x), on_step (before each step_complete), on_build (at the start of every build),
    device_props (of the timing cache), layer_format (the "Format/Datatype" every compute layer
    reports, whatever the flags: TensorRT choosing FP16 kernels under the INT8 flag), not_on_dla
    (ONNX op types whose layers a DLA cannot run: ``can_run_on_DLA`` says False), computes
    (execution writes what the parsed ONNX model gives on ONNX Runtime, rounded through float16
    in an FP16 engine, where ``fp16_outputs`` may change an output further: the accuracy gate's
    tests)."""

    def __init__(self, version: str, gpu: FakeCudart | None = None) -> None:
        check_standin_names()
        self.__version__ = version
        self.version = tuple(int(p) for p in version.split(".")[:2])
        self.has_monitor = allowed("IProgressMonitor", version)
        self.gpu = gpu or FakeCudart()
        self.names: set[str] = set()
        self.touched: set[tuple[str, str]] = set()
        self.calls: list[tuple[Any, ...]] = []
        self.parser_errors: list[tuple[int, int, str]] = []
        self.fail_build = False
        self.corrupt_engine = False
        self.dla_cores = 0
        self.batches = 0
        self.calibration_seen: dict[str, list[Any]] = {}
        self.steps = 4
        self.on_step: Callable[[int], None] | None = None
        self.on_build: Callable[[], None] | None = None
        self.device_props = "sm87-16sm-30.6GiB"
        self.layer_format: str | None = None
        self.not_on_dla: set[str] = set()
        self.computes = False
        #: output name -> what an FP16 engine gives instead (one NonZero match more or less)
        self.fp16_outputs: dict[str, Callable[[Any], Any]] = {}
        #: plugin creators registered in this process: only init_libnvinfer_plugins fills it
        self.plugin_registry: set[str] = set()
        #: output names whose location is HOST (shape tensors): they need host pointers
        self.host_tensors: set[str] = set()
        #: the "Format/Datatype" of GEMMs inside a Myelin region (10.x): "Half" under INT8
        #: is TensorRT keeping transformer GEMMs in FP16 (NVIDIA/TensorRT#3784)
        self.gemm_format: str | None = None
        #: the process's one logger: the first given to a Builder or Runtime while none is alive
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.process_logger: Any = None
        self.module = self._namespace()

    def __enter__(self) -> FakeTensorRT:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def touch(self, owner: str, name: str) -> None:
        if not allowed(name, self.__version__):
            raise AttributeError(f"{owner!r} has no attribute {name!r} in TensorRT {self.__version__}")
        self.names.add(name)
        self.touched.add((owner, name))

    def callback(self, obj: Any, owner: str, name: str, failed: Any, *args: Any,
                 convert: Callable[[Any], Any] | None = None) -> Any:
        """Call the runtime's override as the bindings' C++ wrapper does: any exception is
        printed and swallowed, and the wrapper returns its failure value."""
        self.touch(owner, name)
        try:
            result = getattr(obj, name)(*args)
            return convert(result) if convert is not None else result
        except BaseException as exc:
            print(f"[ERROR] Exception caught in {name}(): {type(exc).__name__}: {exc}", file=sys.stderr)
            self.calls.append(("swallowed", name, type(exc).__name__))
            return failed

    def logger_for(self, owner: Any, logger: Any) -> Any:
        """TensorRT keeps one logger pointer: a different one given while a Builder or Runtime
        is alive is ignored (NVIDIA/TensorRT#1475); the first one keeps getting the messages."""
        if not len(self.live) or self.process_logger is None:
            self.process_logger = logger
        elif logger is not self.process_logger:
            self.calls.append(("logger_ignored",))
        self.live.add(owner)
        return self.process_logger

    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        """Registers the plugin library's creators (TensorRT v10.3.0 plugin/api/inferPlugin.cpp;
        ModulatedDeformConv2d at :205)."""
        self.touch("tensorrt", "init_libnvinfer_plugins")
        self.calls.append(("init_libnvinfer_plugins", namespace))
        self.plugin_registry.add("ModulatedDeformConv2d")
        return True

    def log(self, logger: Any, severity: str, message: str) -> None:
        self.callback(logger, "ILogger", "log", None, Member(severity, SEVERITY.index(severity)), message)

    def flags_built(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "build"][-1]  # type: ignore[no-any-return]

    def _namespace(self) -> Strict:
        from tests.backends.tensorrt import fake_build, fake_engine

        module = Strict(self, "tensorrt")
        enums = {name: Enum(self, name, members) for name, members in ENUMS.items()}
        attrs: dict[str, Any] = {
            **enums,
            "ILogger": interface(self, "ILogger", Severity=Enum(self, "Severity", SEVERITY)),
            "IInt8EntropyCalibrator2": interface(self, "IInt8EntropyCalibrator2"),
            "IProgressMonitor": interface(self, "IProgressMonitor"),
            "IOutputAllocator": interface(self, "IOutputAllocator"),
            "init_libnvinfer_plugins": self.init_libnvinfer_plugins,
            "Builder": lambda logger: fake_build.Builder(self, logger),
            "OnnxParser": lambda network, logger: fake_build.OnnxParser(self, network, logger),
            "Runtime": lambda logger: fake_engine.Runtime(self, logger),
        }
        object.__setattr__(module, "__version__", self.__version__)
        for name, value in attrs.items():
            if allowed(name, self.__version__):
                object.__setattr__(module, name, value)
        return module


@cache
def check_standin_names() -> None:
    """Every public name the stand-in defines exists in at least one real release."""
    from tests.backends.tensorrt import fake_build, fake_engine

    names = {"ILogger", "Severity", "IInt8EntropyCalibrator2", "IProgressMonitor", "Builder",
             "OnnxParser", "Runtime", "IOutputAllocator", "init_libnvinfer_plugins",
             "reallocate_output", "notify_shape", *ENUMS, *SEVERITY}
    names.update(m for members in ENUMS.values() for m in members)
    for module in (fake_build, fake_engine):
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, Strict) and cls.__module__ == module.__name__:
                names.update(n for n in vars(cls) if not n.startswith("_"))
                names.update(cls._settable)
    releases = {f"{v}.0" for v in RELEASES}
    invented = sorted(n for n in names if not any(allowed(n, r) for r in releases))
    if invented:
        raise AssertionError(f"the stand-in defines names no real TensorRT has: {invented}")
