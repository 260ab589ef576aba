"""TensorRTRuntime: ONNX -> serialized TensorRT engine, verified, then published.

``compile_engine`` refuses in seconds what the release's ONNX parser cannot import
(:mod:`~app.backends.tensorrt.opsupport`), selects the configured GPU in its (build) thread,
refuses what a DLA cannot run, builds (:mod:`~app.backends.tensorrt.build`), checks the engine
against the ONNX model and publishes it through :class:`Sha256Sidecar`. Every Builder, parser
and Runtime gets the one process logger (:mod:`~app.backends.tensorrt.logsink`), which registers
TensorRT's plugin library before the first of them exists. The warm path never imports TensorRT:
names and versions come from the host probe, which reads the installed version without loading
libnvinfer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from app import cancel as faults
from app import events
from app.backends.base import EngineRunner, PrecisionInEffect
from app.backends.onnx_model import ModelInterface, inspect_model, resolve_profiles
from app.backends.tensorrt.api import TrtApi
from app.backends.tensorrt.build import build_serialized
from app.backends.tensorrt.caches import timing_cache_path, timing_cache_present
from app.backends.tensorrt.callbacks import CallbackErrors
from app.backends.tensorrt.dla import check_dla_request
from app.backends.tensorrt.loader import import_tensorrt
from app.backends.tensorrt.logsink import logging_to
from app.backends.tensorrt.opsupport import require_supported
from app.backends.tensorrt.verify import check_engine, warm_up
from app.cache.fsread import open_binary
from app.cache.names import EngineFilenameSchema
from app.cache.sidecar import Sha256Sidecar
from app.cancel import cancellable_sleep
from app.errors import BackendUnavailableError, EngineBuildError
from app.host import select_device
from app.host.probe import tensorrt_package
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, InputProfile, PrecisionMode

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
        if trt_module is None and tensorrt_package() is None:
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
        # What this release cannot import is refused in seconds, not after a long build.
        require_supported(Path(model_path), self.version(), cfg.model_name, self.logger,
                          resolve_profiles(inspect_model(model_path, cfg.model_name),
                                           cfg.input_shapes, cfg.model_name))
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
            blob = build_serialized(self, api, Path(model_path), model, profiles, cfg, errors,
                                    buffers)
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
        with open_binary(artifact) as handle:  # a FIFO or a device there: UnsafeFileError
            payload = handle.read()
        buffers = _Buffers(self._memory)
        try:
            self._load_and_check(api, payload, model, profiles, cfg, CallbackErrors(), buffers)
        finally:
            buffers.close()

    def device_free_memory(self) -> int | None:
        """The probed GPU's free bytes on a discrete GPU; None on a Jetson's integrated one."""
        from app.host import device_free_memory

        return device_free_memory(self.host.cuda_device, self._runtime_api())

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        """What the engine's compute layers run in, from TensorRT's engine inspector (the
        engine is deserialized again; :mod:`~app.backends.tensorrt.inspector`), and its
        build's DLA placement."""
        from app.backends.tensorrt.inspector import engine_information, precision_in_effect

        api = self._api()
        select_device(self.host.cuda_device, self._runtime_api())
        with open_binary(artifact) as handle:
            blob = handle.read()
        engine = self._deserialize(api, blob, build_config, CallbackErrors())
        effect = precision_in_effect(engine_information(api.trt, engine),
                                     build_config.precision.value)
        placed = self._placed.pop(build_config.model_name, None)
        return effect if effect is None or placed is None else replace(effect, dla=placed)

    def open_runner(self, artifact: Path, build_config: BuildConfig) -> EngineRunner:
        """The engine on GPU ``cuda_device`` and, built for a DLA, on core ``dla_core``
        (:class:`~app.backends.tensorrt.runner.TrtRunner`)."""
        from app.backends.tensorrt.runner import TrtRunner

        return TrtRunner(artifact, build_config.model_name, trt=self._trt, cudart=self._cudart,
                         cuda_device=build_config.cuda_device, dla_core=build_config.dla_core)

    def _deserialize(self, api: TrtApi, blob: Any, cfg: BuildConfig,
                     errors: CallbackErrors) -> Any:
        with self._sink(api, cfg.model_name, errors) as sink:
            runtime = api.trt.Runtime(sink.logger)
            if cfg.dla_core is not None:
                runtime.DLA_core = cfg.dla_core  # before deserializing: the core it runs on
            engine = runtime.deserialize_cuda_engine(blob)
        errors.raise_first(cfg.model_name)
        if engine is None:
            raise EngineBuildError(f"{cfg.model_name}: the engine does not deserialize: "
                                   + ("; ".join(sink.errors[-5:]) or "no error logged"))
        return engine

    def _load_and_check(self, api: TrtApi, blob: Any, model: ModelInterface,
                        profiles: dict[str, InputProfile], cfg: BuildConfig,
                        errors: CallbackErrors, buffers: _Buffers) -> None:
        engine = self._deserialize(api, blob, cfg, errors)
        check_engine(api, engine, model, profiles, cfg.model_name)
        if cfg.verify == "infer":
            warm_up(api, engine, profiles, buffers.get(), cfg.model_name)

    def _sink(self, api: TrtApi, model_name: str, errors: CallbackErrors) -> Any:
        """The process's TensorRT logger sending to this model's events until the block ends:
        warnings as WARNING events (TensorRT's layernorm-overflow warning among them), errors
        kept for the error message, INFO and VERBOSE only under --debug."""
        def forward(severity: str, message: str) -> None:
            if severity == "WARNING":
                events.emit(self.logger, logging.WARNING, events.TENSORRT_WARNING,
                            f"{model_name}: TensorRT warning: {message}", model_name=model_name)
                return
            events.emit(self.logger, logging.DEBUG, events.TENSORRT_LOG,
                        f"{model_name}: TensorRT {severity}: {message}", model_name=model_name,
                        severity=severity)

        return logging_to(api.trt, forward, errors, verbose=self.logger.isEnabledFor(logging.DEBUG))

    def _warner(self, model_name: str) -> Callable[[str, str], None]:
        """A cache's warnings (not saved, reset) as events of ``model_name``."""
        return lambda kind, message: events.emit(self.logger, logging.WARNING, kind,
                                                 f"{model_name}: {message}", model_name=model_name)
