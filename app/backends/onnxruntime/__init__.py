"""The CPU backend: ONNX models compiled to ORT-format models, rewritten for the CPU they run on
(fused kernels, NCHWc layouts), hence named for the ONNX Runtime release and that CPU. INT8 is
static quantization on the calibration batches; FP16 needs an FP16 CPU kernel for every node."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from app import cancel as faults
from app.backends.base import EngineRunner, HostBackend, PrecisionInEffect, build_inputs
from app.cache.fsread import open_binary, read_small
from app.cache.hashing import sha256_bytes
from app.cache.names import OrtFilenameSchema
from app.cancel import CANCEL, cancellable_sleep
from app.errors import BuildCancelledError, EngineBuildError, ModelDataError
from app.host.probe import declared_version
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, InputProfile, PrecisionMode

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface


@functools.cache
def cpu_identity() -> tuple[str, str]:
    """(``x86_64-<8 hex>`` from the CPU model and flags, model name); /proc/cpuinfo, not
    platform.processor(), which runs `uname -p` in a subprocess."""
    model, flags = "", ""
    try:
        cpuinfo = read_small("/proc/cpuinfo", 1 << 20, truncate=True)  # the first CPU's lines
        for line in cpuinfo.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in {"model name", "cpu model", "hardware"} and not model.strip():
                model = value.strip()
            elif key in {"flags", "features"} and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    arch = os.uname().machine.lower().replace("-", "_") or "cpu"
    digest = sha256_bytes(f"{model}|{flags}")[:8]
    return f"{arch}-{digest}", model or arch


@functools.cache
def _ort_version() -> str:
    return declared_version("onnxruntime")


class OnnxRuntimeBackend(HostBackend):
    name = "onnxruntime"

    def __init__(self, host: HostCapabilities | None = None) -> None:
        # Found, not imported: a warm boot must not pay for loading ONNX Runtime.
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError("onnxruntime is not installed", name="onnxruntime")
        self.host = host or HostCapabilities(0, "none", "none")

    def version(self) -> str:
        return _ort_version()

    def device_name(self) -> str:
        return cpu_identity()[1]

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str:
        major_minor = ".".join(self.version().split(".")[:2])
        return OrtFilenameSchema.build(model_name=model_name, ort=major_minor,
                                       cpu=cpu_identity()[0], precision=precision)

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        import tempfile  # build-only modules load here: a warm boot never builds

        cfg = build_config
        model, profiles = build_inputs(model_path, cfg)
        cancellable_sleep(faults.slow_build_seconds())
        with tempfile.TemporaryDirectory(prefix="engine-init-ort-") as tmp:
            source = Path(model_path)
            if cfg.precision is PrecisionMode.INT8:
                source = self._quantize(source, model, profiles, cfg, Path(tmp))
            elif cfg.precision is PrecisionMode.FP16:
                source = self._to_fp16(source, Path(tmp))
            payload = self._optimize(source, Path(tmp) / "model.ort", cfg)
        self._verify(payload, model, profiles, cfg)
        return self.publish(cfg, payload, self.version())

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        import dataclasses  # always loaded, even with ``verify: none``

        from app.backends.onnx_model import resolve_profiles

        cfg = build_config if build_config.verify != "none" else dataclasses.replace(
            build_config, verify="io")
        profiles = resolve_profiles(model, cfg.input_shapes, cfg.model_name)
        self._verify(str(artifact), model, profiles, cfg)  # ONNX Runtime reads the file itself

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect:
        from app.backends.onnx_model import inspect_model, resolve_profiles
        from app.backends.onnxruntime.sessions import precision_in_effect

        cfg = build_config
        model = inspect_model(model_path, cfg.model_name)
        profiles = resolve_profiles(model, cfg.input_shapes, cfg.model_name)
        return precision_in_effect(artifact, _zeros(model, profiles), cfg.precision.value,
                                   cfg.model_name)

    def open_runner(self, artifact: Path, build_config: BuildConfig) -> EngineRunner:
        from app.backends.onnxruntime.sessions import open_engine

        return open_engine(artifact, build_config.model_name)

    def _optimize(self, source: Path, out: Path, cfg: BuildConfig) -> bytes:
        from app.backends.onnxruntime.sessions import open_session, session_options

        options = session_options(optimization="ORT_ENABLE_ALL",
                                  entries={"session.save_model_format": "ORT"})
        options.optimized_model_filepath = str(out)
        hint = ("ONNX Runtime's CPU kernels lack FP16 versions of some nodes here; "
                "use precision fp32 or int8 for this backend"
                if cfg.precision is PrecisionMode.FP16 else "check the model with onnx.checker")
        open_session(str(source), options, f"{cfg.model_name}: ONNX Runtime could not compile "
                     f"the model for {cfg.precision.value}", hint=hint)
        with open_binary(out) as handle:
            return handle.read()

    def _quantize(self, source: Path, model: ModelInterface, profiles: dict[str, InputProfile],
                  cfg: BuildConfig, tmp: Path) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from app.backends.calibration import CalibrationSet

        batches = CalibrationSet(cfg.calibration_dir, model, profiles, cfg.model_name).require().batches()
        reader = SimpleNamespace(get_next=lambda: None if CANCEL.is_set() else next(batches, None))

        # quantize_static writes "<model>-inferred.onnx" beside its input, and /models is a
        # read-only mount: quantize a private copy (external weights loaded and kept with it).
        source = _private_copy(source, tmp)
        out = tmp / "quantized.onnx"
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # its advice goes to the root logger
        try:
            quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except (EngineBuildError, BuildCancelledError, ModelDataError):
            raise
        except Exception as exc:
            raise EngineBuildError(f"{cfg.model_name}: INT8 quantization failed: "
                                   f"{str(exc)[:300]}", hint="try fp32, or other calibration data"
                                   ) from exc
        finally:
            root.setLevel(level)
        return out

    @staticmethod
    def _to_fp16(source: Path, tmp: Path) -> Path:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        from app.backends.onnx_model import load_onnx

        converted = convert_float_to_float16(load_onnx(source), keep_io_types=True)
        out = tmp / "fp16.onnx"
        onnx.save(converted, str(out))
        return out

    def _verify(self, payload: bytes | str, model: ModelInterface, profiles: dict[str, InputProfile],
                cfg: BuildConfig) -> None:
        from app.backends.onnxruntime.sessions import open_session, session_options

        if cfg.verify == "none":
            return
        # Without repacking the weights, loading takes a quarter less (3 x 200 MB: 0.92 s, 1.24 s).
        options = session_options(ort_format=True, entries={"session.disable_prepacking": "1"})
        session = open_session(payload, options, f"{cfg.model_name}: the compiled model does not load")
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        want_in, want_out = [t.name for t in model.inputs], [t.name for t in model.outputs]
        if got_in != want_in or got_out != want_out:
            raise EngineBuildError(f"{cfg.model_name}: compiled I/O {got_in}->{got_out} differs "
                                   f"from the ONNX model's {want_in}->{want_out}")
        if cfg.verify == "infer":
            session.run(None, _zeros(model, profiles))


def _zeros(model: ModelInterface, profiles: dict[str, InputProfile]) -> dict[str, Any]:
    import numpy as np

    return {t.name: np.zeros(profiles[t.name].opt, dtype=t.dtype) for t in model.inputs}


def _private_copy(source: Path, tmp: Path) -> Path:
    import onnx

    from app.backends.onnx_model import load_onnx

    model = load_onnx(source)
    copy = tmp / "source.onnx"
    onnx.save(model, str(copy), save_as_external_data=model.ByteSize() > (1 << 30))
    return copy

