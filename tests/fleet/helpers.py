"""Real keys, real cache files, SKU identities and a real registry for the fleet tests.

The identities stand in for a probe (there is no Jetson here): they are the values an AGX Orin
64 GB and an Orin NX 16 GB report (tests/host/test_identity.py reads them from a device tree).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.fleet.bundle import (
    describe,
    documents,
    generate_keypair,
    load_private_key,
    load_public_key,
    write_bundle,
)
from app.host.identity import HardwareIdentity
from tests.helpers import REPO, cli, orin, write_job_config

AGX = orin()
NX = orin(sm_count=8, total_memory=16_464_859_136,
          board=("nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"),
          board_model="NVIDIA Orin NX Developer Kit")


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing (the tests' servers on loopback)."""

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port, one thread a request, until the block ends;
    yields ``127.0.0.1:<port>``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Keys:
    private_file: Path
    public_file: Path

    @property
    def private(self):  # type: ignore[no-untyped-def]
        return load_private_key(self.private_file)

    @property
    def public(self):  # type: ignore[no-untyped-def]
        return load_public_key(self.public_file)


def make_keys(folder: Path, name: str) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    keys = Keys(folder / f"{name}.pem", folder / f"{name}.pub.pem")
    generate_keypair(keys.private_file, keys.public_file)
    return keys


def cache_files(root: Path, sku_tag: str = "sm87", engine_bytes: int = 300_000) -> dict[str, Path]:
    """A cache as a run leaves it: engines with sidecars and records, a timing cache and a
    calibration cache. Engine bytes are random (an engine is opaque to the bundle)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for model in ("dinov2_vpr", "lightglue"):
        name = f"{model}__{sku_tag}_jp6.2_trt10.3_fp16.engine"
        payload = os.urandom(engine_bytes)
        digest = hashlib.sha256(payload).hexdigest()
        (root / name).write_bytes(payload)
        (root / f"{name}.sha256").write_text(digest + "\n")
        (root / f"{name}.record.json").write_text(json.dumps({"engine_sha256": digest, "model": model}))
        files.update({name: root / name, f"{name}.sha256": root / f"{name}.sha256",
                      f"{name}.record.json": root / f"{name}.record.json"})
    (root / "timing").mkdir(exist_ok=True)
    (root / "timing" / "trt10.3.0.30__sm87__orin.timing").write_bytes(os.urandom(5000))
    (root / "calibration").mkdir(exist_ok=True)
    calib = root / "calibration" / "lightglue__trt10.3.0.30__0123456789abcdef.calib"
    calib.write_bytes(b"TRT-1030-EntropyCalibration2\n")
    for sub in ("timing/trt10.3.0.30__sm87__orin.timing",
                "calibration/lightglue__trt10.3.0.30__0123456789abcdef.calib"):
        files[sub] = root / sub
    return files


def export(dest: Path, files: dict[str, Path], identity: HardwareIdentity, keys: Keys) -> Path:
    described = describe(files)
    return write_bundle(dest, described, documents(described, identity, keys.private))


def blob_of(layout_dir: Path, source: Path) -> Path:
    return layout_dir / "blobs" / "sha256" / hashlib.sha256(source.read_bytes()).hexdigest()


def leftovers(cache_root: Path) -> list[str]:
    """Everything under candidates/ but the per-SKU lock files."""
    folder = cache_root / "candidates"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@dataclass
class Registry:
    """A real CNCF Distribution registry on loopback, its storage in a temp folder."""

    address: str  # 127.0.0.1:<port>
    storage: Path

    def repository(self, name: str = "fleet/engines") -> str:
        return f"{self.address}/{name}"

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_registry(folder: Path, auth_yaml: str = "") -> Iterator[Registry]:
    """Starts `docker-registry serve` (Debian package docker-registry); skipped when it is not
    installed, a failure under REQUIRE_REGISTRY_TESTS=1 (as CI sets)."""
    import shutil
    import subprocess
    import time
    import urllib.error
    import urllib.request

    binary = shutil.which("docker-registry")
    if binary is None:
        message = "the docker-registry package is not installed (apt-get install docker-registry)"
        if os.environ.get("REQUIRE_REGISTRY_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    storage = folder / "registry-storage"
    storage.mkdir(parents=True)
    for _ in range(3):  # the free port can be taken between the probe and the bind
        port = _free_port()
        config = folder / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{auth_yaml}")
        log = open(folder / "registry.log", "wb")  # noqa: SIM115 (closed below)
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.05)
        else:
            process.kill()
            process.wait()
            log.close()
            continue
        try:
            yield Registry(f"127.0.0.1:{port}", storage)
        finally:
            process.terminate()
            process.wait(10)
            log.close()
        return
    message = f"docker-registry did not start: {(folder / 'registry.log').read_text()[-500:]}"
    if os.environ.get("REQUIRE_REGISTRY_TESTS") == "1":
        pytest.fail(message)
    pytest.skip(message)




@dataclass
class SlowProxy:
    """An HTTP proxy on loopback in front of a real registry that passes every answer through,
    except blob bodies of at least ``min_bytes``, which it sends 1 byte every ``every_s`` seconds
    (a registry, or a link, that trickles). Bounded: each trickle stops after ``for_s`` or when
    the client goes away."""

    address: str
    blob_started: Any  # threading.Event, set when a blob's first byte was sent

    def repository(self, name: str = "fleet/engines") -> str:
        return f"{self.address}/{name}"


@contextmanager
def slow_proxy(upstream: str, every_s: float = 2.0, for_s: float = 30.0,
               min_bytes: int = 0) -> Iterator[SlowProxy]:
    import http.client

    started = threading.Event()
    stop = threading.Event()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            host, port = upstream.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", self.path, headers={k: v for k, v in self.headers.items()
                                                    if k.lower() in ("accept", "authorization")})
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "date", "server"):
                    self.send_header(key, value)
            self.end_headers()
            if "/blobs/" not in self.path or answer.status != 200 or len(body) < min_bytes:
                self.wfile.write(body)
                return
            deadline = time.monotonic() + for_s
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    started.set()
                    if stop.wait(every_s) or time.monotonic() > deadline:
                        break
            except OSError:
                pass  # the client gave up: what the test wants
            self.close_connection = True

    with serving(Handler) as address:
        try:
            yield SlowProxy(address, started)
        finally:
            stop.set()


@dataclass(frozen=True)
class Reference:
    """A reference host that ran its corpus and exported it, signed with ``private``."""

    root: Path
    private: Path
    public: Path
    bundle: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def make_robot(tmp_path: Path, corpus, ref: Reference, bundle: Path | None = None, *,  # type: ignore[no-untyped-def]
               public_key: bool = True, gate: bool = False) -> Path:
    """A robot (its own copy of the models) that imported ``bundle``; its config path.
    ``public_key``: whether its config names the fleet's key; ``gate``: dinov2_vpr is checked
    with ``verify: accuracy``."""
    models = tmp_path / "models"
    models.mkdir()
    local = dict(corpus)
    for name in ("dinov2_vpr", "lightglue", "aliked"):
        local[name] = models / corpus[name].name
        shutil.copyfile(corpus[name], local[name])
    fleet = {"fleet": {"public_key_file": str(ref.public)}} if public_key else {}
    config = write_job_config(tmp_path / "robot", local, **fleet)
    if gate:
        doc = yaml.safe_load(config.read_text())
        doc["backbones"][0]["verify"] = "accuracy"
        config.write_text(yaml.safe_dump(doc))
    (tmp_path / "robot" / "cache").mkdir()
    imported = cli("--config", str(config), "import", str(bundle or ref.bundle), "--public-key",
                   str(ref.public))
    assert imported.returncode == 0, imported.stderr
    return config


@contextmanager
def stalling_registry() -> Iterator[tuple[str, threading.Event]]:
    """A registry that answers /v2/, then accepts every other request and never answers it;
    the event is set once a request is held."""
    held, stop = threading.Event(), threading.Event()

    class Handler(QuietHandler):
        def _stall(self) -> None:
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            held.set()
            stop.wait(30)
            self.close_connection = True

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _stall

    with serving(Handler) as address:
        try:
            yield f"{address}/fleet/engines", held
        finally:
            stop.set()


@contextmanager
def trickling_registry() -> Iterator[str]:
    """A registry that answers /v2/ and then sends every other answer one byte every 0.5 s."""
    import contextlib

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", "2" if self.path == "/v2/" else "100000")
            self.end_headers()
            if self.path == "/v2/":
                self.wfile.write(b"{}")
                return
            with contextlib.suppress(OSError):
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.5)

    with serving(Handler) as address:
        yield f"{address}/fleet/engines"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("engine-init: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def sigterm_when_held(held: threading.Event, *args: str, wait_s: float = 30) -> str:
    """Run ``engine-init ARGS``, SIGTERM it once the registry holds its request (``held``,
    within ``wait_s``): it must exit 143 within 2 s, saying so in one error line; its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    process = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert held.wait(wait_s), process.communicate(timeout=30)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143 and time.monotonic() - started < 2, stderr
    assert "interrupted by SIGTERM" in one_error_line(subprocess.CompletedProcess([], 143, "", stderr))
    return stderr
