"""TensorRTRuntime: ONNX -> serialized TensorRT engine, checked, then published; and what its
compute layers run in, read from the engine inspector (Myelin per release:
docs/tensorrt.md#what-the-precision-check-can-see-per-release). The warm path never imports
TensorRT: names and versions come from the host probe."""

from __future__ import annotations

import logging
import stat
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from app import cancel as faults
from app.backends.base import EngineRunner, HostBackend, PrecisionInEffect, build_inputs
from app.backends.onnx_model import ModelInterface, resolve_profiles
from app.backends.tensorrt.api import CallbackErrors, TrtApi, import_tensorrt
from app.backends.tensorrt.build import build_serialized, check_dla_request, tensorrt_log
from app.backends.tensorrt.caches import MAX_CACHE_BYTES, timing_cache_path
from app.backends.tensorrt.opsupport import require_supported
from app.backends.tensorrt.runner import DeviceMemory, TrtRunner, check_engine, load_cudart, warm_up
from app.cache.fsread import open_binary, parse_json
from app.cancel import cancellable_sleep
from app.errors import BackendUnavailableError, EngineBuildError
from app.host import select_device
from app.host.probe import tensorrt_package
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, InputProfile

_LOG = logging.getLogger("engine_init")


class TensorRTRuntime(HostBackend):
    """``trt_module`` and ``cudart`` (cuda-python's runtime module) are injectable."""

    name = "tensorrt"

    def __init__(self, host: HostCapabilities, *, trt_module: Any = None,
                 cudart: Any = None, logger: logging.Logger | None = None) -> None:
        if trt_module is None and tensorrt_package() is None:
            raise ImportError("tensorrt is not installed", name="tensorrt")
        self.host = host
        self._trt = trt_module
        self._cudart = cudart
        self.logger = logger or _LOG
        #: model name -> its last build's DLA placement (build.check_placement), for the record
        self._placed: dict[str, dict[str, Any] | None] = {}

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        if not self.host.trt_full:
            return None
        return timing_cache_path(cache_root, self.host.trt_full, self.host.sm, self.host.device_name)

    def timing_cache_present(self, build_config: BuildConfig) -> bool:
        root = build_config.cache_root or Path(build_config.engine_path or ".").parent
        try:
            st = timing_cache_path(root, self.version(), self.host.sm, self.host.device_name).lstat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_CACHE_BYTES

    def _api(self) -> TrtApi:
        """TensorRT, with the configured GPU made current in this thread (a new thread's is 0)."""
        if self._trt is None:
            self._trt = import_tensorrt()
        api = TrtApi(self._trt)
        if self.host.trt_full and api.full_version != self.host.trt_full:
            raise BackendUnavailableError(
                f"the loaded TensorRT is {api.full_version}, but the host probe found "
                f"{self.host.trt_full}: two TensorRT installs are visible",
                hint="remove one (pip vs system); engines only load with the version that built them")
        select_device(self.host.cuda_device, self._runtime_api())
        return api

    def _runtime_api(self) -> Any:
        if self._cudart is None:
            self._cudart = load_cudart()
        return self._cudart

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        cfg = build_config
        model, profiles = build_inputs(model_path, cfg)
        # What this release cannot import is refused in seconds, not after a long build.
        require_supported(Path(model_path), self.version(), cfg.model_name, self.logger, profiles)
        api = self._api()
        cancellable_sleep(faults.slow_build_seconds())
        check_dla_request(cfg.model_name, cfg.dla_core, cfg.precision, profiles)
        memory = DeviceMemory(self._runtime_api(), self.host.cuda_device)
        errors = CallbackErrors()
        try:
            blob, self._placed[cfg.model_name] = build_serialized(
                api, self.logger, self.host, Path(model_path), model, profiles, cfg, errors, memory)
            self._load_and_check(api, blob, model, profiles, cfg, errors, memory)
        finally:
            memory.close()  # also when the build raised: calibration buffers are freed
        return self.publish(cfg, memoryview(blob), api.full_version)

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        cfg = build_config
        api = self._api()
        profiles = resolve_profiles(model, cfg.input_shapes, cfg.model_name)
        with open_binary(artifact) as handle:  # a FIFO or a device there: UnsafeFileError
            payload = handle.read()
        memory = DeviceMemory(self._runtime_api(), self.host.cuda_device)
        try:
            self._load_and_check(api, payload, model, profiles, cfg, CallbackErrors(), memory)
        finally:
            memory.close()

    def device_free_memory(self) -> int | None:
        from app.host import device_free_memory

        return device_free_memory(self.host.cuda_device, self._runtime_api())

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        api = self._api()
        with open_binary(artifact) as handle:
            blob = handle.read()
        engine = self._deserialize(api, blob, build_config, CallbackErrors())
        inspector = engine.create_engine_inspector()
        effect = precision_in_effect(
            str(inspector.get_engine_information(api.trt.LayerInformationFormat.JSON)),
            build_config.precision.value)
        placed = self._placed.pop(build_config.model_name, None)
        return effect if effect is None or placed is None else replace(effect, dla=placed)

    def open_runner(self, artifact: Path, build_config: BuildConfig) -> EngineRunner:
        return TrtRunner(artifact, build_config.model_name, trt=self._trt, cudart=self._cudart,
                         cuda_device=build_config.cuda_device, dla_core=build_config.dla_core)

    def _deserialize(self, api: TrtApi, blob: Any, cfg: BuildConfig,
                     errors: CallbackErrors) -> Any:
        with tensorrt_log(api, self.logger, cfg.model_name, errors) as (logger, logged):
            engine = api.deserialize(logger, blob, cfg.dla_core)
        errors.raise_first(cfg.model_name)
        if engine is None:
            raise EngineBuildError(f"{cfg.model_name}: the engine does not deserialize: "
                                   + ("; ".join(logged[-5:]) or "no error logged"))
        return engine

    def _load_and_check(self, api: TrtApi, blob: Any, model: ModelInterface,
                        profiles: dict[str, InputProfile], cfg: BuildConfig,
                        errors: CallbackErrors, memory: DeviceMemory) -> None:
        engine = self._deserialize(api, blob, cfg, errors)
        check_engine(api, engine, model, profiles, cfg.model_name)
        if cfg.verify == "infer":
            warm_up(api, engine, profiles, memory, cfg.model_name)


#: TensorRT's layer types: CaskConvolution, CaskGemmMatrixMultiply, gemm, MatrixMultiply...
_COMPUTE = ("conv", "gemm", "matrixmultiply", "fullyconnected", "rnn", "attention")
#: Words of TensorRT's "Format/Datatype" ("Int8", "Half", "Float" without an execution
#: context; "Row major linear FP32", "Channel major FP16 format where channel % 8 == 0"...).
#: "UInt8" before "Int8" and "BFloat16" before "Float" (TREx activations.py's format table).
_TYPES = (("uint8", "uint8"), ("int8", "int8"), ("fp8", "fp8"), ("bfloat16", "bf16"),
          ("bf16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
          ("float", "fp32"))
_MYELIN, _MYELIN_GEMM = "myelin", "gemm"


def precision_in_effect(info: str, precision: str) -> PrecisionInEffect | None:
    """Each compute layer in the type of its first input, from the inspector's JSON; None when
    the engine holds layer names only (built without detailed verbosity)."""
    try:
        doc = parse_json(info)
    except ValueError:
        return None
    layers = doc.get("Layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        return None
    ops: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    opaque = myelin_fp16 = 0
    for layer in layers:
        kind = str(layer.get("LayerType", ""))
        ops[kind] += 1
        if kind.lower() == _MYELIN:
            opaque += 1
        elif any(word in kind.lower() for word in _COMPUTE):
            inputs = layer.get("Inputs") or [{}]
            first = inputs[0] if isinstance(inputs[0], dict) else {}
            fmt = str(first.get("Format/Datatype", "")).lower()
            ran[which := next((p for word, p in _TYPES if word in fmt), "other")] += 1
            myelin_fp16 += kind.lower() == _MYELIN_GEMM and which == "fp16"
    return PrecisionInEffect.counted(precision, ops, ran, opaque=opaque, myelin_fp16=myelin_fp16)
