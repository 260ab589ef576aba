"""The TensorRT build itself: parse, configure, build; :class:`TensorRTRuntime` calls it.

Parse the ONNX model with ``OnnxParser`` (the plugin library registered first, by the process
logger), configure precision, workspace, optimization level, the layers kept in FP32
(:mod:`~app.backends.tensorrt.constraints`), the optimization and calibration profiles, INT8
calibration, the timing cache, DLA and the progress monitor, then ``build_serialized_network``,
re-raising what a callback raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from app import events
from app.backends.calibration import CalibrationSet
from app.backends.onnx_model import ModelInterface
from app.backends.tensorrt.api import TrtApi
from app.backends.tensorrt.caches import TimingCache, calibration_model_key
from app.backends.tensorrt.calibrator import calibration_plan, make_calibrator
from app.backends.tensorrt.callbacks import CallbackErrors
from app.backends.tensorrt.constraints import nodes_to_keep, pin_layers
from app.backends.tensorrt.dla import check_placement, require_core
from app.backends.tensorrt.opsupport import load_graph
from app.backends.tensorrt.profiles import add_profiles
from app.backends.tensorrt.progress import make_progress_monitor
from app.cache.hashing import hash_file
from app.cancel import CANCEL, cancelled_error
from app.errors import EngineBuildError
from app.values import BuildConfig, HostCapabilities, InputProfile, PrecisionMode


class BuildHost(Protocol):
    """What a build asks of the runtime that runs it (the runtime imports this module, so the
    build names the members it uses rather than importing the runtime back)."""

    logger: logging.Logger
    host: HostCapabilities
    _placed: dict[str, dict[str, Any] | None]

    def _sink(self, api: TrtApi, model_name: str, errors: CallbackErrors) -> Any: ...

    def _warner(self, model_name: str) -> Callable[[str, str], None]: ...


def build_serialized(rt: BuildHost, api: TrtApi, model_path: Path, model: ModelInterface,
                     profiles: dict[str, InputProfile], cfg: BuildConfig,
                     errors: CallbackErrors, buffers: Any) -> Any:
    """The serialized engine of ``model_path`` (an IHostMemory); EngineBuildError otherwise."""
    trt = api.trt
    with rt._sink(api, cfg.model_name, errors) as sink:
        logger = sink.logger
        builder = trt.Builder(logger)
        network = api.create_network(builder)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model_path)):
            found = [parser.get_error(i) for i in range(parser.num_errors)]
            detail = "; ".join(f"[{e.code()}] node {e.node()}: {e.desc()}" for e in found)
            raise EngineBuildError(f"{cfg.model_name}: TensorRT's ONNX parser rejected "
                                   f"{model_path.name}: {detail or 'no detail'}",
                                   hint="check the opset and ops against TensorRT's ONNX support")
        config = builder.create_builder_config()
        api.configure(config, cfg.precision, cfg.workspace_mb << 20, cfg.optimization_level)
        if cfg.precision is not PrecisionMode.FP32 and cfg.keep_fp32:
            _keep_fp32(rt, api, network, config, model_path, cfg)
        int8 = cfg.precision is PrecisionMode.INT8
        add_profiles(builder, network, config, profiles, cfg.model_name, calibrate=int8)
        root = cfg.cache_root or cfg.engine_path.parent  # type: ignore[union-attr]
        if int8:
            config.int8_calibrator = _calibrator(rt, api, model_path, model, profiles, cfg, root,
                                                 network, errors, buffers)
        if cfg.dla_core is not None:
            require_core(builder, cfg.model_name, cfg.dla_core)
            api.use_dla(config, cfg.dla_core)
        rt._placed[cfg.model_name] = None if cfg.dla_core is None else check_placement(
            trt, network, config, cfg.model_name, cfg.dla_core, rt.logger)
        timing = TimingCache(root, api.full_version, rt.host.sm, rt.host.device_name,
                             rt._warner(cfg.model_name))
        timing.attach(config)
        if api.has_progress_monitor:
            config.progress_monitor = make_progress_monitor(trt, rt.logger, cfg.model_name, errors,
                                                            cfg.progress_fields)
        blob = builder.build_serialized_network(network, config)
        errors.raise_first(cfg.model_name)
        if blob is None:
            if CANCEL.is_set():
                raise cancelled_error()
            raise EngineBuildError(f"{cfg.model_name}: TensorRT could not build the engine: "
                                   + ("; ".join(sink.errors[-5:]) or "no error logged"),
                                   hint="run with --debug for TensorRT's log; try a larger "
                                        "workspace_mb")
        timing.save(config)
        return blob


def _keep_fp32(rt: BuildHost, api: TrtApi, network: Any, config: Any, model_path: Path,
               cfg: BuildConfig) -> None:
    nodes = nodes_to_keep(load_graph(model_path).graph, cfg.keep_fp32)
    pinned = pin_layers(api.trt, network, config, nodes)
    if pinned:
        events.emit(rt.logger, logging.INFO, events.TENSORRT_KEEP_FP32,
                    f"{cfg.model_name}: {len(pinned)} layers kept in float32 "
                    f"(keep_fp32: {', '.join(cfg.keep_fp32)})", model_name=cfg.model_name,
                    layers=pinned[:50])


def _calibrator(rt: BuildHost, api: TrtApi, model_path: Path, model: ModelInterface,
                profiles: dict[str, InputProfile], cfg: BuildConfig, root: Path, network: Any,
                errors: CallbackErrors, buffers: Any) -> Any:
    # Every batch is checked before the build (TensorRT would read a bad one as the end of
    # the data), and must have the opt shape that TensorRT calibrates at. The calibrator API
    # is deprecated from TensorRT 10.1 ("Superseded by explicit quantization", v10.3.0
    # python/src/infer/pyCore.cpp:1428-1433) and gone in TensorRT 11 (docs/tensorrt.md).
    if api.version >= (10, 1):
        events.emit(rt.logger, logging.INFO, events.TENSORRT_DEPRECATED,
                    f"{cfg.model_name}: TensorRT {api.full_version} deprecates INT8 calibration "
                    "(from 10.1; removed in TensorRT 11): export with Q/DQ nodes to keep INT8 "
                    "on later releases", model_name=cfg.model_name)
    calib = CalibrationSet(cfg.calibration_dir, model, profiles, cfg.model_name,
                           opt_only=True).validate()
    model_key = calibration_model_key(hash_file(model_path), profiles)
    write_to, read_from = calibration_plan(calib, root, api.full_version, model_key)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dtypes = {t.name: api.dtype_name(t.dtype) for t in inputs}
    return make_calibrator(api.trt, calib, write_to, read_from, buffers.get(), errors, dtypes,
                           rt._warner(cfg.model_name))
