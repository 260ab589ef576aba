"""Driving TensorRTRuntime through the stand-ins (FakeTensorRT, FakeCudart): the host, the
runtime and the build config the tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import BuildConfig, HostCapabilities, InputProfile, PrecisionMode
from app.backends.tensorrt.device_memory import DeviceMemory
from app.backends.tensorrt.runtime import TensorRTRuntime
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT

#: one API shape per supported release line
VERSIONS = ["8.5.2", "8.6.2", "10.3.0", "10.13.3"]
DYN = InputProfile((1, 1, 64), (1, 16, 64), (1, 64, 64))


def host(version: str, **kw: Any) -> HostCapabilities:
    return HostCapabilities(87, "6.2", ".".join(version.split(".")[:2]), trt_full=version,
                            device_name="Orin (nvgpu)", l4t="36.4.3", **kw)


def runtime_for(fake: FakeTensorRT, **kw: Any) -> TensorRTRuntime:
    return TensorRTRuntime(host(fake.__version__, **kw), trt_module=fake.module,
                           device_memory=lambda: DeviceMemory(fake.gpu))  # type: ignore[arg-type]


def config(tmp_path: Path, name: str, precision: PrecisionMode = PrecisionMode.FP16,
           **kw: Any) -> BuildConfig:
    engine = tmp_path / f"{name}__sm87_jp6.2_trt10.3_{precision.value}.engine"
    return BuildConfig(precision=precision, model_name=name, engine_path=engine,
                       cache_root=tmp_path, **kw)
