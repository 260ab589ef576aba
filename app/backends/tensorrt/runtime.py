"""TensorRTRuntime: ONNX -> serialized TensorRT engine, verified, then published.

``compile_engine`` selects the configured GPU in its (build) thread, refuses what a DLA cannot
run, parses the model with ``OnnxParser``, configures precision, workspace, optimization level,
the optimization and calibration profiles, INT8 calibration, the timing cache, DLA and the
progress monitor, builds, re-raises what a callback raised, checks the engine against the ONNX
model and publishes it through :class:`Sha256Sidecar`. The warm path never imports TensorRT:
names and versions come from the host probe, which reads the installed version without loading
libnvinfer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events, faults
from app.backends.calibration import CalibrationSet
from app.backends.onnx_model import ModelInterface, inspect_model, resolve_profiles
from app.backends.tensorrt.api import TrtApi
from app.backends.tensorrt.caches import (
    TimingCache,
    calibration_model_key,
    timing_cache_path,
    timing_cache_present,
)
from app.backends.tensorrt.calibrator import calibration_plan, make_calibrator
from app.backends.tensorrt.callbacks import CallbackErrors
from app.backends.tensorrt.dla import check_dla_request, check_placement, require_core
from app.backends.tensorrt.loader import import_tensorrt
from app.backends.tensorrt.profiles import add_profiles
from app.backends.tensorrt.progress import make_progress_monitor
from app.backends.tensorrt.verify import check_engine, warm_up
from app.cache.hashing import hash_file
from app.cache.names import EngineFilenameSchema
from app.cache.sidecar import Sha256Sidecar
from app.cancel import CANCEL, cancellable_sleep, cancelled_error
from app.errors import BackendUnavailableError, EngineBuildError
from app.host.cuda import select_device
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, InputProfile, PrecisionMode

if TYPE_CHECKING:
    from app.verify.precision import PrecisionInEffect

__all__ = ["TensorRTRuntime"]

_LOG = logging.getLogger("engine_init")


class _Buffers:
    """GPU memory for calibration and warm-up, made on first use; ``close`` frees it."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._memory: Any = None

    def get(self) -> Any:
        if self._memory is None:
            self._memory = self._factory()
        return self._memory

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


class TensorRTRuntime:
    """``compile_engine`` for TensorRT; ``trt_module`` and ``cudart`` (cuda-python's runtime
    module) are injectable."""

    name = "tensorrt"

    def __init__(self, host: HostCapabilities, *, trt_module: Any = None,
                 cudart: Any = None, logger: logging.Logger | None = None) -> None:
        if trt_module is None:
            import importlib.util

            if importlib.util.find_spec("tensorrt") is None:
                raise ImportError("tensorrt is not installed", name="tensorrt")
        self.host = host
        self._trt = trt_module
        self._cudart = cudart
        self.logger = logger or _LOG
        #: model name -> its last build's DLA placement (dla.check_placement), for the record
        self._placed: dict[str, dict[str, Any] | None] = {}

    # -- what the compiler asks before deciding hit or miss (no TensorRT import) -------------
    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str:
        return EngineFilenameSchema.build(model_name=model_name, sm=self.host.sm,
                                          jetpack=self.host.jetpack, trt=self.host.trt,
                                          precision=precision)

    def version(self) -> str:
        return self.host.trt_full or self.host.trt

    def device_name(self) -> str:
        return self.host.device_name

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        """The timing cache a build under ``cache_root`` reads and saves (a fleet bundle's seeds
        it: app.fleet.promote); None while the full TensorRT version is unknown before a build."""
        if not self.host.trt_full:
            return None
        return timing_cache_path(cache_root, self.host.trt_full, self.host.sm, self.host.device_name)

    def timing_cache_present(self, build_config: BuildConfig) -> bool:
        """Whether this build will load a timing cache (the build governor's ETA)."""
        root = build_config.cache_root or Path(build_config.engine_path or ".").parent
        return timing_cache_present(root, self.version(), self.host.sm, self.host.device_name)

    # -- the build ---------------------------------------------------------------------------
    def _api(self) -> TrtApi:
        if self._trt is None:
            self._trt = import_tensorrt()
        api = TrtApi(self._trt)
        if self.host.trt_full and api.full_version != self.host.trt_full:
            raise BackendUnavailableError(
                f"the loaded TensorRT is {api.full_version}, but the host probe found "
                f"{self.host.trt_full}: two TensorRT installs are visible",
                hint="remove one (pip vs system); engines only load with the version that built them")
        return api

    def _runtime_api(self) -> Any:
        if self._cudart is None:
            from app.backends.tensorrt.device_memory import cudart

            self._cudart = cudart()
        return self._cudart

    def _memory(self) -> Any:
        from app.backends.tensorrt.device_memory import DeviceMemory

        return DeviceMemory(self._runtime_api(), self.host.cuda_device)

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        cfg = build_config
        if cfg.engine_path is None:
            raise EngineBuildError(f"{cfg.model_name}: no engine_path in the build config")
        api = self._api()
        # This runs in a fresh build thread, whose current device is 0 whatever was probed.
        select_device(self.host.cuda_device, self._runtime_api())
        cancellable_sleep(faults.slow_build_seconds())
        model = inspect_model(model_path, cfg.model_name)
        profiles = resolve_profiles(model, cfg.input_shapes, cfg.model_name)
        check_dla_request(cfg.model_name, cfg.dla_core, cfg.precision, profiles)
        buffers = _Buffers(self._memory)
        errors = CallbackErrors()
        try:
            blob = self._build(api, Path(model_path), model, profiles, cfg, errors, buffers)
            self._load_and_check(api, blob, model, profiles, cfg, errors, buffers)
        finally:
            buffers.close()  # also when the build raised: calibration buffers are freed
        digest = Sha256Sidecar.write_atomic_and_sidecar(cfg.engine_path, memoryview(blob))
        return EngineCacheEntry(cfg.engine_path, digest, self.host.sm, self.host.jetpack,
                                self.host.trt, cfg.precision,
                                {"backend": self.name, "backend_version": api.full_version})

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        """Check an engine built elsewhere (a fleet candidate) as a fresh build is checked:
        it deserializes here and matches the ONNX model's I/O and the configured profiles."""
        cfg = build_config
        api = self._api()
        select_device(self.host.cuda_device, self._runtime_api())
        profiles = resolve_profiles(model, cfg.input_shapes, cfg.model_name)
        payload = Path(artifact).read_bytes()
        buffers = _Buffers(self._memory)
        try:
            self._load_and_check(api, payload, model, profiles, cfg, CallbackErrors(), buffers)
        finally:
            buffers.close()

    def device_free_memory(self) -> int | None:
        """The probed GPU's free bytes on a discrete GPU; None on a Jetson's integrated one."""
        from app.host.cuda import device_free_memory

        return device_free_memory(self.host.cuda_device, self._runtime_api())

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        """What the engine's compute layers run in, from TensorRT's engine inspector (the
        engine is deserialized again; app.verify.precision), and its build's DLA placement."""
        from app.verify.precision import trt_precision_in_effect

        api = self._api()
        select_device(self.host.cuda_device, self._runtime_api())
        engine = self._deserialize(api, artifact.read_bytes(), build_config, CallbackErrors())
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(api.trt.LayerInformationFormat.JSON)
        effect = trt_precision_in_effect(str(info), build_config.precision.value)
        placed = self._placed.pop(build_config.model_name, None)
        return effect if effect is None or placed is None else replace(effect, dla=placed)

    def _deserialize(self, api: TrtApi, blob: Any, cfg: BuildConfig,
                     errors: CallbackErrors) -> Any:
        runtime_logger = self._trt_logger(api, cfg.model_name, errors)
        runtime = api.trt.Runtime(runtime_logger)
        if cfg.dla_core is not None:
            runtime.DLA_core = cfg.dla_core  # before deserializing: the core it runs on
        engine = runtime.deserialize_cuda_engine(blob)
        errors.raise_first(cfg.model_name)
        if engine is None:
            raise EngineBuildError(f"{cfg.model_name}: the engine does not deserialize: "
                                   + ("; ".join(runtime_logger.errors[-5:]) or "no error logged"))
        return engine

    def _load_and_check(self, api: TrtApi, blob: Any, model: ModelInterface,
                        profiles: dict[str, InputProfile], cfg: BuildConfig,
                        errors: CallbackErrors, buffers: _Buffers) -> None:
        engine = self._deserialize(api, blob, cfg, errors)
        check_engine(api, engine, model, profiles, cfg.model_name)
        if cfg.verify == "infer":
            warm_up(api, engine, profiles, buffers.get(), cfg.model_name)

    def _trt_logger(self, api: TrtApi, model_name: str, errors: CallbackErrors) -> Any:
        def forward(severity: str, message: str) -> None:
            events.emit(self.logger, logging.DEBUG, events.TENSORRT_LOG,
                        f"{model_name}: TensorRT {severity}: {message}", model_name=model_name,
                        severity=severity)

        # INFO and VERBOSE only under --debug: a build logs thousands of them.
        return api.make_logger(forward, errors, verbose=self.logger.isEnabledFor(logging.DEBUG))

    def _build(self, api: TrtApi, model_path: Path, model: ModelInterface,
               profiles: dict[str, InputProfile], cfg: BuildConfig,
               errors: CallbackErrors, buffers: _Buffers) -> Any:
        trt = api.trt
        logger = self._trt_logger(api, cfg.model_name, errors)
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
        int8 = cfg.precision is PrecisionMode.INT8
        add_profiles(builder, network, config, profiles, cfg.model_name, calibrate=int8)
        root = cfg.cache_root or cfg.engine_path.parent  # type: ignore[union-attr]
        if int8:
            config.int8_calibrator = self._calibrator(api, model_path, model, profiles, cfg, root,
                                                      network, errors, buffers)
        if cfg.dla_core is not None:
            require_core(builder, cfg.model_name, cfg.dla_core)
            api.use_dla(config, cfg.dla_core)
        self._placed[cfg.model_name] = None if cfg.dla_core is None else check_placement(
            trt, network, config, cfg.model_name, cfg.dla_core, self.logger)
        timing = TimingCache(root, api.full_version, self.host.sm, self.host.device_name,
                             self._warner(cfg.model_name))
        timing.attach(config)
        if api.has_progress_monitor:
            config.progress_monitor = make_progress_monitor(trt, self.logger, cfg.model_name, errors,
                                                            cfg.progress_fields)
        blob = builder.build_serialized_network(network, config)
        errors.raise_first(cfg.model_name)
        if blob is None:
            if CANCEL.is_set():
                raise cancelled_error()
            raise EngineBuildError(f"{cfg.model_name}: TensorRT could not build the engine: "
                                   + ("; ".join(logger.errors[-5:]) or "no error logged"),
                                   hint="run with --debug for TensorRT's log; try a larger workspace_mb")
        timing.save(config)
        return blob

    def _calibrator(self, api: TrtApi, model_path: Path, model: ModelInterface,
                    profiles: dict[str, InputProfile], cfg: BuildConfig, root: Path, network: Any,
                    errors: CallbackErrors, buffers: _Buffers) -> Any:
        # Every batch is checked before the build (TensorRT would read a bad one as the end of
        # the data), and must have the opt shape that TensorRT calibrates at.
        calib = CalibrationSet(cfg.calibration_dir, model, profiles, cfg.model_name,
                               opt_only=True).validate()
        model_key = calibration_model_key(hash_file(model_path), profiles)
        write_to, read_from = calibration_plan(calib, root, api.full_version, model_key)
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        dtypes = {t.name: api.dtype_name(t.dtype) for t in inputs}
        return make_calibrator(api.trt, calib, write_to, read_from, buffers.get(), errors, dtypes,
                               self._warner(cfg.model_name))

    def _warner(self, model_name: str) -> Callable[[str, str], None]:
        """A cache's warnings (not saved, reset) as events of ``model_name``."""
        return lambda kind, message: events.emit(self.logger, logging.WARNING, kind,
                                                 f"{model_name}: {message}", model_name=model_name)
