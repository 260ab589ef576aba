"""TensorRT that cannot be loaded at run time, and ``backend: auto`` where the GPU is unusable.

Real engine-init processes, with the stand-ins (FakeTensorRT, a stand-in cuda.bindings) first on
the child's PYTHONPATH, as the JetPack bases have them: the ``tensorrt`` package is installed,
and its import or the GPU works only once the NVIDIA runtime has mounted the driver libraries.
"""

from __future__ import annotations

import json

import pytest

from tests.backends.tensorrt.helpers import start_job, write_job, write_standin_site

NO_DLA = ("libnvdla_compiler.so: cannot open shared object file: No such file or directory")


@pytest.mark.parametrize("raised", [f'raise ImportError("{NO_DLA}")',
                                    'raise OSError("libnvinfer.so.10: file too short")'])
def test_a_tensorrt_that_cannot_load_is_exit_69_naming_the_loader_error(raised, tmp_path, corpus):
    site = write_standin_site(tmp_path / "site", "10.3.0", load_error=raised)
    proc = start_job(write_job(tmp_path, corpus["aliked"]), site, L4T_VERSION="36.4.3")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 69, stderr[-2000:]
    kind, message = raised.removeprefix("raise ").split("(", 1)
    assert f"TensorRT is installed but cannot be loaded: {kind}: {message[1:-2]}" in stderr
    assert "runtime: nvidia" in stderr and "Traceback" not in stderr


def test_auto_on_a_jetson_whose_gpu_cannot_be_used_is_refused(tmp_path, corpus):
    site = write_standin_site(tmp_path / "site", "10.3.0", gpu=False)
    proc = start_job(write_job(tmp_path, corpus["aliked"], backend="auto", precision="fp32"), site,
                     L4T_VERSION="36.4.3")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 69, stderr[-2000:]
    assert "backend auto: this Jetson (L4T 36.4.3) has TensorRT 10.3.0, but its GPU cannot be used" \
        in stderr and "CUDA_ERROR_NO_DEVICE" in stderr
    assert not list((tmp_path / "cache").glob("aliked__*"))  # no ONNX Runtime model instead
    assert not (tmp_path / "run" / "ready.json").exists()


def test_auto_elsewhere_falls_back_to_onnxruntime_with_a_warning(tmp_path, corpus):
    site = write_standin_site(tmp_path / "site", "10.3.0", gpu=False)
    proc = start_job(write_job(tmp_path, corpus["aliked"], backend="auto", precision="fp32"), site)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    warnings = [json.loads(line) for line in stderr.splitlines() if '"c10.host.warning"' in line]
    assert any("TensorRT 10.3.0 is installed but the GPU cannot be used" in w["msg"]
               and w["kv"]["backend"] == "onnxruntime" for w in warnings), stderr[-2000:]
    assert (tmp_path / "run" / "ready.json").exists()
