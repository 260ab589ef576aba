"""Driving TensorRTRuntime through the stand-ins (FakeTensorRT, FakeCudart): the host, the
runtime and the build config the tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from app import BuildConfig, HostCapabilities, InputProfile, PrecisionMode
from app.backends.tensorrt.runtime import TensorRTRuntime
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT

REPO = Path(__file__).resolve().parents[3]
#: one API shape per supported release line
VERSIONS = ["8.5.2", "8.6.2", "10.3.0", "10.13.3"]
DYN = InputProfile((1, 1, 64), (1, 16, 64), (1, 64, 64))


def host(version: str, **kw: Any) -> HostCapabilities:
    return HostCapabilities(87, "6.2", ".".join(version.split(".")[:2]), trt_full=version,
                            device_name="Orin (nvgpu)", l4t="36.4.3", **kw)


def runtime_for(fake: FakeTensorRT, **kw: Any) -> TensorRTRuntime:
    return TensorRTRuntime(host(fake.__version__, **kw), trt_module=fake.module, cudart=fake.gpu)


def config(tmp_path: Path, name: str, precision: PrecisionMode = PrecisionMode.FP16,
           **kw: Any) -> BuildConfig:
    engine = tmp_path / f"{name}__sm87_jp6.2_trt10.3_{precision.value}.engine"
    return BuildConfig(precision=precision, model_name=name, engine_path=engine,
                       cache_root=tmp_path, **kw)


def _save(graph: Any, path: Path) -> Path:
    from onnx import checker, helper, save

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def make_tokens_model(path: Path) -> Path:
    """``ids`` int64[1,8], ``x`` float32[1,8] -> ``y`` float32 (x * ids), ``y64`` float64 (x):
    the types TensorRT's ONNX parser maps (INT64 on 8.x, DOUBLE everywhere)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "ids_f"], ["y"]),
             helper.make_node("Cast", ["x"], ["y64"], to=TensorProto.DOUBLE)]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("y64", TensorProto.DOUBLE, [1, 8])])
    return _save(graph, path)


def make_nonzero_model(path: Path) -> Path:
    """``x`` float32[1,16] -> ``where`` int64[2, nnz]: an output whose size depends on the data."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["where"])], "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("where", TensorProto.INT64, [2, "nnz"])])
    return _save(graph, path)


def calibration_cache_file(root: Path, version: str, model: str, onnx: Path,
                           profiles: dict[str, InputProfile]) -> Path:
    """Where a calibration cache of ``model`` (made from other data) would be found."""
    from app.backends.tensorrt.caches import calibration_cache_path, calibration_model_key
    from app.cache.hashing import hash_file

    key = calibration_model_key(hash_file(onnx), profiles)
    return calibration_cache_path(root, model, version, key, "0123456789abcdef")


#: the resolved profile of the demo corpus's aliked model (static)
ALIKED = {"image": InputProfile.fixed((1, 3, 64, 64))}


_SHIM_TENSORRT = '''\
__version__ = "{version}"
# The TensorRT stand-in as the "tensorrt" package of a real engine-init process (tests only).
import os
import sys
import time

from cuda.bindings import runtime as _gpu
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT

_fake = FakeTensorRT(__version__, gpu=_gpu)
_build_s = float(os.environ.get("FAKE_TRT_BUILD_S", "0"))  # a build that nothing interrupts
_step_s = float(os.environ.get("FAKE_TRT_STEP_S", "0"))    # many steps of that length (10.x)
if _build_s:
    _fake.on_build = lambda: time.sleep(_build_s)
if _step_s:
    _fake.steps = 1000
    _fake.on_step = lambda step: time.sleep(_step_s)
_report = os.environ.get("FAKE_TRT_REPORT")  # <path>.started, <path>.returned around a build
if _report:
    from tests.backends.tensorrt import fake_build

    _build = fake_build.Builder.build_serialized_network

    def _reporting(self, network, config):
        open(_report + ".started", "w").close()
        try:
            return _build(self, network, config)
        finally:
            open(_report + ".returned", "w").close()

    fake_build.Builder.build_serialized_network = _reporting
sys.modules[__name__] = _fake.module
'''
_SHIM_RUNTIME = '''\
import os
import sys

from tests.backends.tensorrt.fake_cuda import FakeCudart

# A Jetson's integrated GPU, unless the test asks for a discrete one with this much free.
_free = os.environ.get("FAKE_CUDA_DISCRETE_FREE")
sys.modules[__name__] = FakeCudart(integrated=not _free, free_bytes=int(_free or 0))
'''
_SHIM_DRIVER = '''\
import enum

GPU = {gpu}


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100


class CUdevice_attribute(enum.IntEnum):
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16


def cuInit(flags):
    return (CUresult.CUDA_SUCCESS if GPU else CUresult.CUDA_ERROR_NO_DEVICE,)


def cuDeviceGetCount():
    return (CUresult.CUDA_SUCCESS, 1)


def cuDriverGetVersion():
    return (CUresult.CUDA_SUCCESS, 12020)


def cuDeviceGet(index):
    return (CUresult.CUDA_SUCCESS, index)


def cuDeviceGetAttribute(attr, dev):
    return (CUresult.CUDA_SUCCESS, {75: 8, 76: 7, 16: 16}[int(attr)])


def cuDeviceTotalMem(dev):
    return (CUresult.CUDA_SUCCESS, 64 << 30)


def cuDeviceGetName(size, dev):
    return (CUresult.CUDA_SUCCESS, b"Orin (nvgpu)".ljust(size, b"\\0"))
'''


def write_standin_site(folder: Path, version: str, gpu: bool = True,
                       load_error: str = "") -> Path:
    """A folder to put first on a child process's PYTHONPATH: ``tensorrt`` is the stand-in of
    ``version``, ``cuda.bindings`` a one-GPU Orin (driver) and FakeCudart (runtime). Without
    ``gpu`` the driver finds no device (a container started without the NVIDIA runtime);
    ``load_error`` (a ``raise ...`` statement) makes ``import tensorrt`` fail as a loader would."""
    trt = _SHIM_TENSORRT.format(version=version)
    if load_error:
        trt = f'__version__ = "{version}"\n{load_error}\n'
    files = {"tensorrt/__init__.py": trt,
             "cuda/__init__.py": "", "cuda/bindings/__init__.py": "",
             "cuda/bindings/runtime.py": _SHIM_RUNTIME,
             "cuda/bindings/driver.py": _SHIM_DRIVER.replace("{gpu}", str(gpu))}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def write_job(root: Path, onnx: Path, backend: str = "tensorrt", precision: str = "fp16") -> Path:
    """A config building one model (``aliked``-shaped) with cache and marker under ``root``."""
    (root / "run").mkdir(exist_ok=True)
    job = root / "job.yaml"
    job.write_text(f"""\
cache_root: {root / 'cache'}
readiness_marker: {root / 'run' / 'ready.json'}
backend: {backend}
precision: {precision}
lock_timeout_s: 10
backbones:
  - model_name: aliked
    onnx_path: {onnx}
    expected_input_shape: [1, 3, 64, 64]
""")
    return job


def start_job(job: Path, site: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """``engine-init run`` (or the command ``args``) in a fresh process with the stand-in site
    first on its path; ``L4T_VERSION`` only as given (None-like "" removes it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_") and k != "L4T_VERSION"}
    full.update(PYTHONPATH=f"{site}:{REPO}", **env)
    return subprocess.Popen([sys.executable, "-m", "app", "--config", str(job), *(args or ("run",))],
                            cwd=REPO,
                            env={k: v for k, v in full.items() if v}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
