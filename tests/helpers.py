"""Helpers shared by the tests; fixtures live in the conftest.py files, everything else here
(a test module never imports another test module or a conftest)."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app import (
    BackboneSpec,
    BuildConfig,
    EngineCacheEntry,
    EngineCompileRequest,
    HostCapabilities,
    PrecisionMode,
    Sha256Sidecar,
)
from app.cache.hashing import sidecar_path
from app.cache.record import record_path

REPO = Path(__file__).resolve().parents[1]
ORIN = HostCapabilities(87, "6.2", "10.3")


# -- the compiler with a stand-in runtime -------------------------------------------------------
def make_request(specs: tuple[BackboneSpec, ...], cache: Path, host: HostCapabilities = ORIN,
                 precision: PrecisionMode = PrecisionMode.FP16, **kw: Any) -> EngineCompileRequest:
    return EngineCompileRequest(backbones=specs, calibration_path=kw.pop("calibration_path", None),
                                cache_root=cache, precision=precision, host=host, **kw)


class EventLog(logging.Handler):
    """Collects the structured events a logger receives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, kind: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "kind", None) == kind]

    def kv(self, kind: str) -> list[dict[str, Any]]:
        return [r.kv for r in self.of(kind)]  # type: ignore[attr-defined]


class FakeRuntime:
    """Stand-in runtime (no real compile): publishes sha256(ONNX bytes + precision) as the
    'engine' through Sha256Sidecar at ``build_config.engine_path``, and records its calls.
    Only ``compile_engine`` exists, as for the plainest third-party runtime."""

    def __init__(self, fail_on: str | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[Path, BuildConfig]] = []
        self.fail_on, self.error = fail_on, error

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        self.calls.append((model_path, build_config))
        if self.fail_on == build_config.model_name and self.error is not None:
            raise self.error
        assert build_config.engine_path is not None
        payload = hashlib.sha256(Path(model_path).read_bytes()).digest() * 64
        payload += build_config.precision.value.encode()
        digest = Sha256Sidecar.write_atomic_and_sidecar(build_config.engine_path, payload)
        return EngineCacheEntry(build_config.engine_path, digest, 87, "6.2", "10.3",
                                build_config.precision, {})

    @property
    def built(self) -> list[str]:
        return [cfg.model_name for _, cfg in self.calls]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (for "left untouched" assertions)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}



# -- real CLI processes ------------------------------------------------------------------------
def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh interpreter; events are JSON lines on stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=kw.pop("cwd", REPO), **kw)


def json_events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "kind" in doc:
            out.append(doc)
    return out


def write_job_config(root: Path, corpus: dict[str, Path], **overrides: Any) -> Path:
    """A config for the demo corpus with cache and marker under ``root``."""
    import yaml

    (root / "run").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "cache_root": str(root / "cache"),
        "readiness_marker": str(root / "run" / "ready.json"),
        "backend": "onnxruntime",
        "precision": "fp32",
        "calibration_path": str(corpus["calibration"]),
        "lock_timeout_s": 60,
        "backbones": [
            {"model_name": "dinov2_vpr", "onnx_path": str(corpus["dinov2_vpr"]),
             "expected_input_shape": [1, 3, 32, 32]},
            {"model_name": "lightglue", "onnx_path": str(corpus["lightglue"]),
             "input_shapes": {"desc0": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]},
                              "desc1": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]}}},
            {"model_name": "aliked", "onnx_path": str(corpus["aliked"]),
             "expected_input_shape": [1, 3, 64, 64], "precision": "int8"},
        ],
    }
    doc.update(overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def popen_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO, **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(job: Path) -> list[str]:
    """After any interruption: every engine the job would accept matches its sidecar and its
    record; a marker exists only if every engine in it verifies. Returns the accepted models."""
    root = job.parent
    status = cli("--config", str(job), "status", "--json")
    assert status.returncode == 0, status.stderr
    accepted = []
    for row in json.loads(status.stdout)["engines"]:
        if not row["reusable"]:
            continue
        engine = Path(row["engine_path"])
        digest = sha256(engine)
        assert sidecar_path(engine).read_text().strip() == digest, engine
        record = json.loads(record_path(engine).read_text())
        assert record["engine_sha256"] == digest and record.get("status") != "building", engine
        accepted.append(row["model_name"])
    marker = root / "run" / "ready.json"
    if marker.exists():
        doc = json.loads(marker.read_text())
        for item in doc["engines"]:
            assert sha256(Path(item["engine_path"])) == item["sha256"]
    return accepted


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` for the test (skips where mounting is not allowed)."""
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)



# -- planted files ----------------------------------------------------------------------------
#: Every kind of thing that may be planted at a path the job reads (see :func:`plant`).
PLANTED_KINDS = ("fifo", "socket", "chardev", "link-to-dev-zero", "link-to-copy", "dangling-link",
                 "folder", "folder-with-data", "huge", "sparse-8g")


def plant(path: Path, kind: str, outside: Path) -> Path | None:
    """Put a ``kind`` thing at ``path`` (replacing what was there); ``outside`` is a folder for
    link targets. Returns the file a link points to, whose bytes must stay as they are."""
    original = path.read_bytes() if path.is_file() and not path.is_symlink() else b"x"
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    target = None
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        # AF_UNIX paths are limited to ~108 bytes: bind in a short folder, then move it.
        short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(short / "s"))
            os.rename(short / "s", path)
        short.rmdir()
    elif kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-copy":
        # The very bytes that stood there: accepted only if the link were followed.
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / f"copy-of-{path.name}"
        target.write_bytes(original)
        path.symlink_to(target)
    elif kind == "dangling-link":
        path.symlink_to(outside / "nothing-here")
    elif kind == "folder":
        path.mkdir()
    elif kind == "folder-with-data":
        path.mkdir()
        (path / "someones-notes.txt").write_text("keep me")
    elif kind == "huge":
        path.write_bytes(os.urandom(8 << 20))
    elif kind == "sparse-8g":
        with open(path, "wb") as handle:
            handle.truncate(8 << 30)
    else:
        raise ValueError(kind)
    return target


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (instead of hanging it) if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def handlers_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM, i.e. engine-init's own code has started (the
    interpreter alone leaves SIGTERM at its default; Linux /proc)."""
    import signal

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((int(line.split()[1], 16) for line in status.splitlines()
                   if line.startswith("SigCgt:")), 0)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def wait_until_started(pid: int, timeout: float = 30) -> None:
    """Block until :func:`handlers_installed` says so."""
    import time

    deadline = time.monotonic() + timeout
    while not handlers_installed(pid):
        assert time.monotonic() < deadline, f"process {pid} never installed its signal handlers"
        time.sleep(0.002)



def wait_for_build(job: Path) -> None:
    """Until the job's first build has started: a pending record ("status": "building")."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for record in (job.parent / "cache").glob("*.record.json"):
            try:
                if '"building"' in record.read_text():
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("the build never started")


# -- the CUDA driver through a stand-in (tests/host) ---------------------------------------------
class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_DEVICE = 101


class Attr(enum.IntEnum):
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16


#: What an AGX Orin 64 GB reports: 16 SMs, the shared RAM less the carve-outs.
ORIN_AGX_64 = {"cc": (8, 7), "sms": 16, "memory": 65_890_271_232}


def fake_driver(count=1, cc=(8, 7), name=b"Orin (nvgpu)", fail=None, sms=16,
                memory=ORIN_AGX_64["memory"]):
    """Stand-in for cuda.bindings.driver: tuple-returning calls, as the real module's."""
    ok = CUresult.CUDA_SUCCESS

    def status(call):
        return CUresult.CUDA_ERROR_NO_DEVICE if fail == call else ok

    attributes = {Attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: cc[0],
                  Attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: cc[1],
                  Attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: sms}

    return SimpleNamespace(
        CUresult=CUresult, CUdevice_attribute=Attr,
        cuInit=lambda flags: (status("cuInit"),),
        cuDeviceGetCount=lambda: (status("cuDeviceGetCount"), count),
        cuDriverGetVersion=lambda: (ok, 12060),
        cuDeviceGet=lambda i: (status("cuDeviceGet"), i),
        cuDeviceGetAttribute=lambda attr, dev: (status("cuDeviceGetAttribute"), attributes[attr]),
        cuDeviceTotalMem=lambda dev: (status("cuDeviceTotalMem"), memory),
        cuDeviceGetName=lambda n, dev: (status("cuDeviceGetName"), name + b"\0" * (n - len(name))),
    )


def real_gpu_available() -> bool:
    """Whether cuda-python and a CUDA GPU are here (the real-GPU tests run only then)."""
    from app.errors import HostProbeError
    from app.host import probe_gpu

    try:
        probe_gpu(int(os.environ.get("TEST_CUDA_DEVICE", "0")))
    except HostProbeError:
        return False
    return True


def tensorrt_unavailable_reason() -> str | None:
    """Why the real-TensorRT tests cannot run here (None: they can)."""
    from app.host.probe import tensorrt_package

    if tensorrt_package() is None:
        return "TensorRT is not installed (it cannot be installed on CI machines)"
    from app.errors import HostProbeError
    from app.host import probe_gpu

    try:
        probe_gpu(0)
    except HostProbeError as exc:
        return f"no GPU: {exc.message}"
    return None


def orin(**changes: Any) -> Any:
    """The identity a Jetson AGX Orin 64 GB with JetPack 6.2 and TensorRT 10.3 reports (there is
    no Jetson here: tests/host/test_identity.py reads these values from a device tree), with
    ``changes``."""
    from dataclasses import replace

    from app.host.identity import HardwareIdentity

    base = HardwareIdentity(
        backend="tensorrt", backend_version="10.3.0.30", machine="aarch64",
        compute_capability="8.7", sm_count=16, total_memory=65_890_271_232, device_name="Orin",
        board=("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"),
        board_model="NVIDIA Jetson AGX Orin Developer Kit", jetpack="6.2", l4t="36.4.3",
        cuda_driver=12060)
    return replace(base, **changes)
