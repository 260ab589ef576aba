"""One TensorRT logger per process, and the plugin library registered once, before any parse or
deserialization.

TensorRT keeps a single logger pointer: a logger given to a Builder or Runtime while another
one is alive is ignored ("TensorRT maintains only a single logger pointer at any given time",
NVIDIA/TensorRT#1475), so a logger per build would send a later build's errors to an earlier
build's logger. Polygraphy uses one process-wide logger for the same reason
(``polygraphy/backend/trt/util.py:get_trt_logger``). Here the one logger forwards to the sink of
whoever uses TensorRT now (:func:`logging_to`): the build, the check after it, the accuracy
runner.

The ONNX parser imports ``DeformConv`` as the ``ModulatedDeformConv2d`` plugin (onnx-tensorrt
10.1-GA importerUtils.cpp:1101-1129), and an engine holding a plugin deserializes only when its
creator is registered; neither the ``tensorrt`` package nor the parser registers the library's
creators, only ``init_libnvinfer_plugins`` does (TensorRT v10.3.0 plugin/api/inferPlugin.cpp).
Polygraphy calls it before parsing and before each ``deserialize_cuda_engine``
(``backend/trt/loader.py:155,700,744``); here :func:`process_logger` calls it once per process.

The Python logger is called for every message TensorRT emits, VERBOSE included: a subclass of
``trt.ILogger`` has no severity filter on the C++ side (TensorRT v10.3.0
python/src/infer/pyCore.cpp:663-681; only the built-in ``trt.Logger`` filters). INFO and VERBOSE
are dropped at once unless the sink asks for them (``--debug``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.backends.tensorrt.callbacks import CallbackErrors

_LOCK = threading.Lock()
#: tensorrt module -> its process-wide logger (a module per process; tests load several)
_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@dataclass
class Sink:
    """Where the process logger's messages go now: ``forward(severity, message)`` for errors
    and warnings (INFO and VERBOSE too when ``verbose``); ``errors`` keeps the error texts."""

    forward: Callable[[str, str], None]
    guard: CallbackErrors
    verbose: bool = False
    errors: list[str] = field(default_factory=list)
    #: the process logger, to give to a Builder, OnnxParser or Runtime
    logger: Any = None


def _make_logger(trt: Any) -> Any:
    severities = trt.ILogger.Severity
    warning_level, error_level = int(severities.WARNING), int(severities.ERROR)
    names = {int(getattr(severities, n)): n
             for n in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")}

    class ProcessLogger(trt.ILogger):  # type: ignore[misc]
        """Never raises (TensorRT would print and drop it): a failure goes to the sink's guard."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.sinks: list[Sink] = []
            self.spare = Sink(lambda severity, message: None, CallbackErrors())

        def log(self, severity: Any, msg: str) -> None:
            sink = self.sinks[-1] if self.sinks else self.spare
            with sink.guard.guard("the TensorRT logger"):
                level = int(severity)
                if level > warning_level and not sink.verbose:
                    return
                if level <= error_level:
                    sink.errors.append(str(msg))
                sink.forward(names.get(level, str(level)), str(msg))

    return ProcessLogger()


def process_logger(trt: Any) -> Any:
    """The process's TensorRT logger; on first use the plugin library is registered with it."""
    with _LOCK:
        logger = _LOGGERS.get(trt)
        if logger is None:
            logger = _make_logger(trt)
            # "This function should be called once before accessing the Plugin Registry"
            # (NvInferPlugin.h): before any parser or runtime of this process exists.
            trt.init_libnvinfer_plugins(logger, "")
            _LOGGERS[trt] = logger
        return logger


@contextmanager
def logging_to(trt: Any, forward: Callable[[str, str], None], guard: CallbackErrors,
               verbose: bool = False) -> Iterator[Sink]:
    """The process logger, sending to a new :class:`Sink` until the block ends."""
    logger = process_logger(trt)
    sink = Sink(forward, guard, verbose, logger=logger)
    with _LOCK:
        logger.sinks.append(sink)
    try:
        yield sink
    finally:
        with _LOCK:
            if sink in logger.sinks:  # ended once (a runner closed twice)
                logger.sinks.remove(sink)
