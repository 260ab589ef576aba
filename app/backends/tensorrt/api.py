"""The binding surface: ``import tensorrt`` (here only), every call whose shape differs between
releases (docs/tensorrt.md, first table), the one process logger, and the callbacks' guard.
tests/backends/tensorrt/test_contract.py checks every name used here against the real bindings.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from app import events
from app.errors import BackendUnavailableError, EngineBuildError, EngineInitError
from app.host.probe import tensorrt_package
from app.values import PrecisionMode

if TYPE_CHECKING:
    from app.host.probe import HostReport

_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
           "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
_HINT = ("run the container with the NVIDIA runtime (compose: runtime: nvidia) and the video "
         "group, which mount the host's driver libraries")


def import_tensorrt(purpose: str = "a TensorRT build") -> Any:
    """``import tensorrt``; a loader error (ImportError, or OSError from the package preloading
    libnvinfer: docs/tensorrt.md#what-the-backend-does-for-each-engine-it-builds) is exit 69."""
    if tensorrt_package() is None:
        raise BackendUnavailableError(f"{purpose} needs TensorRT, which is not installed here",
                                      hint="run it in the image for this JetPack, where the "
                                           "engine was built, or use backend: onnxruntime")
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"TensorRT is installed but cannot be loaded: {type(exc).__name__}: {exc}",
            hint=_HINT) from exc
    return tensorrt


def check_auto_choice(report: HostReport, chosen: str, logger: logging.Logger) -> None:
    """After ``backend: auto`` chose ``chosen``: ONNX Runtime despite an installed TensorRT is
    refused on a Jetson, a warning elsewhere (docs/tensorrt.md, ``backend: auto``)."""
    if chosen == "tensorrt" or not report.tensorrt.present:
        return
    why = report.gpu_error or "no GPU was found"
    if report.release.l4t:
        raise BackendUnavailableError(
            f"backend auto: this Jetson (L4T {report.release.l4t}) has TensorRT "
            f"{report.tensorrt.version}, but its GPU cannot be used ({why}); auto would build "
            "ONNX Runtime CPU models instead", hint=f"{_HINT}; or set backend: onnxruntime")
    events.emit(logger, logging.WARNING, events.HOST_WARNING,
                f"backend auto: TensorRT {report.tensorrt.version} is installed but the GPU "
                f"cannot be used ({why}): building with {chosen}", backend=chosen)


def parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text or "")
    if match is None:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return tuple(int(g) for g in match.groups() if g is not None)


class TrtApi:
    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.full_version = str(trt.__version__)
        self.version = parse_version(self.full_version)
        self.major = self.version[0]

    @property
    def has_progress_monitor(self) -> bool:
        return self.major >= 10

    def create_network(self, builder: Any) -> Any:
        if self.major < 10:
            flag = self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
            return builder.create_network(1 << int(flag))
        return builder.create_network(0)

    def configure(self, config: Any, precision: PrecisionMode, workspace_bytes: int,
                  optimization_level: int) -> None:
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if self.version >= (8, 6):
            config.builder_optimization_level = optimization_level
        if precision in (PrecisionMode.FP16, PrecisionMode.INT8):
            # INT8 keeps FP16 on: layers without INT8 kernels then run in FP16, not FP32.
            config.set_flag(self.trt.BuilderFlag.FP16)
        if precision is PrecisionMode.INT8:
            config.set_flag(self.trt.BuilderFlag.INT8)
        if precision is not PrecisionMode.FP32:
            # Layer types and formats kept in the engine, for the engine inspector's precision
            # read-out. The default keeps names only.
            config.profiling_verbosity = self.trt.ProfilingVerbosity.DETAILED
        if precision is PrecisionMode.FP32:
            # TF32 is on by default (Ampere and later, Orin included): 10-bit mantissas in
            # "fp32" matrix products. fp32 means fp32.
            config.clear_flag(self.trt.BuilderFlag.TF32)

    def use_dla(self, config: Any, core: int) -> None:
        config.default_device_type = self.trt.DeviceType.DLA
        config.DLA_core = core
        config.set_flag(self.trt.BuilderFlag.GPU_FALLBACK)

    def engine_dtype(self, onnx_dtype: str) -> str:
        if onnx_dtype == "float64":
            return "float32"
        if onnx_dtype == "int64" and self.major < 10:
            return "int32"
        return onnx_dtype

    def dtype_name(self, dtype: Any) -> str:
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
        return _DTYPES.get(name, name.lower())

    def io(self, engine: Any) -> tuple[list[str], list[str]]:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        return inputs, [n for n in names if n not in inputs]

    def deserialize(self, logger: Any, blob: Any, dla_core: int | None) -> Any:
        """The ICudaEngine of ``blob``, None if TensorRT refuses it; no runtime outlives it."""
        runtime = self.trt.Runtime(logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core  # before deserializing: the core it runs on
        return runtime.deserialize_cuda_engine(blob)


class CallbackErrors:
    """The first exception raised by one build's callbacks (on TensorRT's threads: the lock).
    The bindings catch and print a callback's exception and return its failure value
    (``get_batch``: "no more batches", so a bad batch k would calibrate on 0..k-1), so each
    callback records it here; the first is re-raised once TensorRT returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: tuple[str, BaseException] | None = None

    @property
    def failed(self) -> bool:
        return self._first is not None

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            with self._lock:
                if self._first is None:
                    self._first = (where, exc)

    def raise_first(self, model_name: str) -> None:
        if self._first is None:
            return
        where, exc = self._first
        if isinstance(exc, EngineInitError):
            raise exc
        raise EngineBuildError(f"{model_name}: {where} failed during the TensorRT build: "
                               f"{type(exc).__name__}: {exc}",
                               hint="run with --debug for the traceback") from exc


# One TensorRT logger per process (NVIDIA/TensorRT#1475: docs/tensorrt.md#logging), forwarding to
# the sink of whoever uses TensorRT now: (forward(severity, message), guard, verbose, errors kept).
_LOCK = threading.Lock()
#: tensorrt module -> its process-wide logger (a module per process; tests load several)
_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_Sink = tuple[Callable[[str, str], None], CallbackErrors, bool, list[str]]


def _make_logger(trt: Any) -> Any:
    severities = trt.ILogger.Severity
    warning_level, error_level = int(severities.WARNING), int(severities.ERROR)
    names = {int(getattr(severities, n)): n
             for n in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")}

    class ProcessLogger(trt.ILogger):  # type: ignore[misc]
        """Never raises: a failure goes to the sink's guard. Called for every message (no C++
        severity filter: v10.3.0 pyCore.cpp:663-681), INFO and VERBOSE dropped unless asked."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.sinks: list[_Sink] = []
            self.spare: _Sink = (lambda severity, message: None, CallbackErrors(), False, [])

        def log(self, severity: Any, msg: str) -> None:
            forward, guard, verbose, errors = self.sinks[-1] if self.sinks else self.spare
            with guard.guard("the TensorRT logger"):
                level = int(severity)
                if level > warning_level and not verbose:
                    return
                if level <= error_level:
                    errors.append(str(msg))
                forward(names.get(level, str(level)), str(msg))

    return ProcessLogger()


def process_logger(trt: Any) -> Any:
    """The process's TensorRT logger; on first use the plugin library is registered with it,
    before any parser or runtime exists (NvInferPlugin.h;
    docs/tensorrt.md#plugins-and-the-contract-for-engine-consumers)."""
    with _LOCK:
        logger = _LOGGERS.get(trt)
        if logger is None:
            logger = _make_logger(trt)
            trt.init_libnvinfer_plugins(logger, "")
            _LOGGERS[trt] = logger
        return logger


@contextmanager
def logging_to(trt: Any, forward: Callable[[str, str], None], guard: CallbackErrors,
               verbose: bool = False) -> Iterator[tuple[Any, list[str]]]:
    """The process logger and the error texts it logs, sending errors and warnings (INFO and
    VERBOSE too when ``verbose``) to ``forward`` until the block ends."""
    logger = process_logger(trt)
    sink: _Sink = (forward, guard, verbose, [])
    with _LOCK:
        logger.sinks.append(sink)
    try:
        yield logger, sink[3]
    finally:
        with _LOCK:  # by identity; ended once even when a runner is closed twice
            logger.sinks[:] = [s for s in logger.sinks if s is not sink]
