"""The TensorRT build: parse, configure, ``build_serialized_network``, then re-raise what a
callback raised (docs/tensorrt.md#what-the-backend-does-for-each-engine-it-builds)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import events
from app.backends.calibration import CalibrationSet
from app.backends.onnx_model import ModelInterface
from app.backends.tensorrt.api import CallbackErrors, TrtApi, logging_to
from app.backends.tensorrt.caches import (
    TimingCache,
    calibration_model_key,
    calibration_plan,
    make_calibrator,
)
from app.backends.tensorrt.opsupport import load_graph, nodes_to_keep
from app.cache.hashing import hash_file
from app.cancel import CANCEL, cancelled_error
from app.errors import BackendUnavailableError, ConfigError, EngineBuildError
from app.values import BuildConfig, HostCapabilities, InputProfile, PrecisionMode

#: At most one progress event per phase in this interval (first and last steps always pass).
MIN_INTERVAL_S = 0.5


def tensorrt_log(api: TrtApi, logger: logging.Logger, model_name: str,
                 errors: CallbackErrors) -> Any:
    """The process's TensorRT logger sending to ``model_name``'s events until the block ends."""
    def forward(severity: str, message: str) -> None:
        if severity == "WARNING":
            events.emit(logger, logging.WARNING, events.TENSORRT_WARNING,
                        f"{model_name}: TensorRT warning: {message}", model_name=model_name)
            return
        events.emit(logger, logging.DEBUG, events.TENSORRT_LOG,
                    f"{model_name}: TensorRT {severity}: {message}", model_name=model_name,
                    severity=severity)

    return logging_to(api.trt, forward, errors, verbose=logger.isEnabledFor(logging.DEBUG))


def build_serialized(api: TrtApi, logger: logging.Logger, host: HostCapabilities,
                     model_path: Path, model: ModelInterface, profiles: dict[str, InputProfile],
                     cfg: BuildConfig, errors: CallbackErrors,
                     memory: Any) -> tuple[Any, dict[str, Any] | None]:
    """The serialized engine (an IHostMemory) and its DLA placement (None without ``dla_core``)."""
    trt = api.trt

    def warn(kind: str, message: str) -> None:  # a cache not used or not saved
        events.emit(logger, logging.WARNING, kind, f"{cfg.model_name}: {message}",
                    model_name=cfg.model_name)

    with tensorrt_log(api, logger, cfg.model_name, errors) as (trt_logger, logged):
        builder = trt.Builder(trt_logger)
        network = api.create_network(builder)
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(model_path)):
            found = [parser.get_error(i) for i in range(parser.num_errors)]
            detail = "; ".join(f"[{e.code()}] node {e.node()}: {e.desc()}" for e in found)
            raise EngineBuildError(f"{cfg.model_name}: TensorRT's ONNX parser rejected "
                                   f"{model_path.name}: {detail or 'no detail'}",
                                   hint="check the opset and ops against TensorRT's ONNX support")
        config = builder.create_builder_config()
        api.configure(config, cfg.precision, cfg.workspace_mb << 20, cfg.optimization_level)
        if cfg.precision is not PrecisionMode.FP32 and cfg.keep_fp32:
            pinned = pin_layers(trt, network, config,
                                nodes_to_keep(load_graph(model_path).graph, cfg.keep_fp32))
            if pinned:
                events.emit(logger, logging.INFO, events.TENSORRT_KEEP_FP32,
                            f"{cfg.model_name}: {len(pinned)} layers kept in float32 "
                            f"(keep_fp32: {', '.join(cfg.keep_fp32)})", model_name=cfg.model_name,
                            layers=pinned[:50])
        int8 = cfg.precision is PrecisionMode.INT8
        _add_profiles(builder, network, config, profiles, cfg.model_name, calibrate=int8)
        root = cfg.cache_root or cfg.engine_path.parent  # type: ignore[union-attr]
        if int8:
            config.int8_calibrator = _calibrator(api, logger, model_path, model, profiles, cfg,
                                                 root, network, errors, memory, warn)
        placed = None
        if cfg.dla_core is not None:
            available = int(builder.num_DLA_cores)
            if cfg.dla_core >= available:
                raise BackendUnavailableError(
                    f"{cfg.model_name}: dla_core {cfg.dla_core} requested, but this device has "
                    f"{available} DLA core(s)", hint="remove dla_core or pick an existing core")
            api.use_dla(config, cfg.dla_core)
            placed = check_placement(trt, network, config, cfg.model_name, cfg.dla_core, logger)
        timing = TimingCache(root, api.full_version, host.sm, host.device_name, warn)
        timing.attach(config)
        if api.has_progress_monitor:
            config.progress_monitor = _progress_monitor(trt, logger, cfg.model_name, errors,
                                                        cfg.progress_fields)
        blob = builder.build_serialized_network(network, config)
        errors.raise_first(cfg.model_name)
        if blob is None:
            if CANCEL.is_set():
                raise cancelled_error()
            raise EngineBuildError(f"{cfg.model_name}: TensorRT could not build the engine: "
                                   + ("; ".join(logged[-5:]) or "no error logged"),
                                   hint="run with --debug for TensorRT's log; try a larger "
                                        "workspace_mb")
        timing.save(config)
        return blob, placed


def _calibrator(api: TrtApi, logger: logging.Logger, model_path: Path, model: ModelInterface,
                profiles: dict[str, InputProfile], cfg: BuildConfig, root: Path, network: Any,
                errors: CallbackErrors, memory: Any, warn: Callable[[str, str], None]) -> Any:
    # Every batch is checked before the build (TensorRT would read a bad one as the end of the
    # data). Deprecated from 10.1: docs/tensorrt.md#int8-calibration.
    if api.version >= (10, 1):
        events.emit(logger, logging.INFO, events.TENSORRT_DEPRECATED,
                    f"{cfg.model_name}: TensorRT {api.full_version} deprecates INT8 calibration "
                    "(from 10.1; removed in TensorRT 11): export with Q/DQ nodes to keep INT8 "
                    "on later releases", model_name=cfg.model_name)
    calib = CalibrationSet(cfg.calibration_dir, model, profiles, cfg.model_name,
                           opt_only=True).validate()
    model_key = calibration_model_key(hash_file(model_path), profiles)
    write_to, read_from = calibration_plan(calib, root, api.full_version, model_key)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dtypes = {t.name: api.dtype_name(t.dtype) for t in inputs}
    return make_calibrator(api.trt, calib, write_to, read_from, memory, errors, dtypes, warn)


def _add_profiles(builder: Any, network: Any, config: Any, profiles: dict[str, InputProfile],
                  model_name: str, calibrate: bool) -> None:
    """The engine's profile when the network has dynamic inputs, and for ``calibrate`` the
    calibration profile, at OPT only: the shape TensorRT calibrates at and the batches were
    checked against (a batch of another shape would be read past its end or cut short)."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    if not any(-1 in tuple(t.shape) for t in tensors):
        return  # a static network needs no profile, and calibrates at its only shape
    profile = builder.create_optimization_profile()
    for tensor in tensors:
        p = profiles[tensor.name]
        profile.set_shape(tensor.name, p.min, p.opt, p.max)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"{model_name}: TensorRT refused the optimization profile "
                               f"{ {k: v.as_dict() for k, v in profiles.items()} }")
    if not calibrate:
        return
    at_opt = builder.create_optimization_profile()
    for tensor in tensors:
        opt = profiles[tensor.name].opt
        at_opt.set_shape(tensor.name, opt, opt, opt)
    if not config.set_calibration_profile(at_opt):
        raise EngineBuildError(f"{model_name}: TensorRT refused the calibration profile at the opt "
                               f"shapes { {k: list(v.opt) for k, v in profiles.items()} }")


def pin_layers(trt: Any, network: Any, config: Any, nodes: set[str]) -> list[str]:
    """Constrain the layers made from ``nodes`` to FP32 (the parser names a node's layer after
    it: onnx-tensorrt 10.1-GA ImporterContext.cpp:108-147), PREFER, not OBEY (v10.3.0
    NvInfer.h:646-656; docs/tensorrt.md#keeping-layers-in-fp32-keep_fp32); their names."""
    if not nodes:
        return []
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        name = str(layer.name)
        if name in nodes:
            layer.precision = trt.DataType.FLOAT
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.DataType.FLOAT)
            pinned.append(name)
    if pinned:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned


def check_dla_request(model_name: str, dla_core: int | None, precision: PrecisionMode,
                      profiles: dict[str, InputProfile]) -> None:
    """ConfigError when ``dla_core`` asks for what a DLA cannot run (FP32, varying shapes)."""
    if dla_core is None:
        return
    field = f"backbones[{model_name}].dla_core"
    if precision is PrecisionMode.FP32:
        raise ConfigError(f"{field}: a DLA runs fp16 or int8 only, and this model is built in "
                          "fp32: TensorRT would silently build it for the GPU",
                          hint="set precision: fp16 (or int8) for this backbone, or remove dla_core")
    varying = sorted(name for name, p in profiles.items() if not p.is_fixed)
    if varying:
        raise ConfigError(f"{field}: a DLA runs fixed shapes only, and input(s) {varying} have a "
                          "min..max range: TensorRT would silently build it for the GPU",
                          hint="give those inputs one shape (min = opt = max), or remove dla_core")


def check_placement(trt: Any, network: Any, config: Any, model_name: str, dla_core: int,
                    logger: logging.Logger) -> dict[str, Any]:
    """How many layers ``config`` places on the DLA and the DLA can run, for the record;
    EngineBuildError when none: a GPU engine named DLA."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    on_dla = sum(1 for layer in layers if config.get_device_type(layer) == trt.DeviceType.DLA
                 and config.can_run_on_DLA(layer))
    figures = {"dla_core": dla_core, "layers": len(layers), "on_dla": on_dla}
    fields = {"model_name": model_name, **figures}
    said = f"{model_name}: {on_dla} of {len(layers)} layers on DLA core {dla_core}"
    if layers and not on_dla:
        message = (f"{model_name}: dla_core {dla_core} was asked, but TensorRT can run none of its "
                   f"{len(layers)} layers on DLA core {dla_core}: all would run on the GPU")
        events.emit(logger, logging.ERROR, events.DLA_IGNORED, message, **fields)
        raise EngineBuildError(message, hint=f"remove dla_core from {model_name} (it runs on the "
                               "GPU), or change its layers to ones a DLA supports")
    if on_dla < len(layers):
        events.emit(logger, logging.WARNING, events.DLA_PARTIAL,
                    f"{said}, the other {len(layers) - on_dla} on the GPU", **fields)
    else:
        events.emit(logger, logging.INFO, events.DLA_CHECKED, said, **fields)
    return figures


def _progress_monitor(trt: Any, logger: logging.Logger, model_name: str, errors: CallbackErrors,
                      fields: Callable[[], dict[str, Any]] | None = None) -> Any:
    """Throttled progress events (with ``fields``: the governor's ETA); False from
    ``step_complete`` stops the build (a signal, or a failed callback)."""

    class EventProgressMonitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._totals: dict[str, int] = {}
            self._last: dict[str, float] = {}

        def _emit(self, phase: str, step: int, force: bool) -> None:
            now = time.monotonic()
            with self._lock:
                total = self._totals.get(phase, 0)
                if not force and now - self._last.get(phase, 0.0) < MIN_INTERVAL_S:
                    return
                self._last[phase] = now
            events.emit(logger, logging.INFO, events.COMPILE_PROGRESS,
                        f"{model_name}: {phase} {step}/{total}", model_name=model_name,
                        phase=phase, step=step, total=total, **(fields() if fields else {}))

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with errors.guard("the progress monitor's phase_start"):
                with self._lock:
                    self._totals[phase_name] = int(num_steps)
                self._emit(phase_name, 0, force=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with errors.guard("the progress monitor's step_complete"):
                total = self._totals.get(phase_name, 0)
                self._emit(phase_name, int(step) + 1, force=int(step) + 1 >= total)
            return not (CANCEL.is_set() or errors.failed)

        def phase_finish(self, phase_name: str) -> None:
            with errors.guard("the progress monitor's phase_finish"), self._lock:
                self._totals.pop(phase_name, None)
                self._last.pop(phase_name, None)

    return EventProgressMonitor()
