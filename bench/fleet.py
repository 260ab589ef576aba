"""Fleet figures: ``engine-init pull`` of a reference robot's engines from a real registry on
loopback, and the ``run`` that promotes them, each against references timed in the same rounds.

- pull vs the **pull reference process**: a fresh interpreter that imports what the job imports
  first (as the reference process of ``run``), then GETs the same blobs from the same registry
  with ``http.client``, one thread per blob, sha256s them and writes and fsyncs each one, as a
  pull stores it (target <= 1.3x); shown too against the same reference storing nothing;
- the promoting ``run`` (each candidate copied into the cache while hashed, then loaded by the
  backend) vs a warm ``run`` over the engines it published plus the backend's own load of them
  (a process that imports ONNX Runtime and creates an ``InferenceSession`` on each), timed
  apart and added (target <= 1.3x).

The engines are real: ONNX models with one large weight (``tools.demo``), compiled by the ONNX
Runtime backend of a "reference robot" whose cache is pushed; the "robot" is a second cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.common import MB, REFERENCE_IMPORTS, REPO, check, cli, report
from tools.demo import make_dinov2_vpr

SHAPE = [1, 3, 32, 32]

# The blobs of the bundle fetched as the reference fetches them: one thread and one connection
# per blob, 1 MiB reads, each digest checked. With a folder instead of "-", each blob is also
# written there and fsync'd, as a pull stores it.
PULL_REFERENCE = REFERENCE_IMPORTS + """
import http.client
host, _, port = sys.argv[1].rpartition(":")
repository, store = sys.argv[2], sys.argv[3]

def fetch(digest):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", f"/v2/{repository}/blobs/{digest}")
    answer = conn.getresponse()
    assert answer.status == 200, answer.status
    sha = hashlib.sha256()
    out = open(os.path.join(store, digest[7:]), "wb") if store != "-" else None
    while chunk := answer.read(1 << 20):
        sha.update(chunk)
        if out:
            out.write(chunk)
    if out:
        out.flush()
        os.fsync(out.fileno())
        out.close()
    conn.close()
    assert "sha256:" + sha.hexdigest() == digest

with ThreadPoolExecutor(max_workers=len(sys.argv) - 4) as pool:
    list(pool.map(fetch, sys.argv[4:]))
"""

# What loading the engines costs, in a process of its own: import ONNX Runtime, then an
# InferenceSession on each artifact with ONNX Runtime's defaults (as the stack that uses them).
DESERIALIZE = """
import sys
import onnxruntime as ort

for path in sys.argv[1:]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.load_model_format", "ORT")
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
"""


@contextmanager
def registry(folder: Path) -> Iterator[str | None]:
    """``docker-registry serve`` (Debian's CNCF Distribution) on a free loopback port with its
    storage under ``folder``, as tests/fleet start it; yields its address, None if absent."""
    import socket

    binary = shutil.which("docker-registry")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder.mkdir(parents=True)
    config = folder / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _config(root: Path, models: list[Path], fleet: dict[str, Any]) -> Path:
    for folder in ("run", "cache"):  # the robot's volumes
        (root / folder).mkdir(parents=True)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cache_root": str(root / "cache"), "readiness_marker": str(root / "run" / "ready.json"),
        "backend": "onnxruntime", "precision": "fp32", "fleet": fleet,
        "backbones": [{"model_name": m.stem, "onnx_path": str(m), "expected_input_shape": SHAPE}
                      for m in models]}))
    return config


def _ok(*args: str) -> subprocess.CompletedProcess[str]:
    done = cli(*args)
    if done.returncode != 0:
        raise RuntimeError(f"engine-init {' '.join(args[2:])} exited {done.returncode}: "
                           f"{done.stderr[-800:]}")
    return done


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for line in done.stderr.splitlines():
        if '"c10.engine.compile.summary"' in line:
            return dict(json.loads(line)["kv"])
    raise RuntimeError(f"no summary in {done.stderr[-800:]}")


def _rounds(n: int, steps: dict[str, tuple[Callable[[], object], Callable[[], object]]]
            ) -> dict[str, float]:
    """Best of ``n`` for each (setup, timed) pair, in rounds that run each once; the setup
    (resetting the robot's cache) is not timed. Each starts with nothing left to write back
    to the disk, so that no step waits on the writes of the one before."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(n):
        for name, (setup, fn) in steps.items():
            setup()
            os.sync()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def fleet(tmp: Path, size_mb: int, rounds: int) -> None:
    with registry(tmp / "registry") as address:
        if address is None:
            report("fleet: pull and promotion", "skipped: docker-registry is not installed "
                   "(apt-get install docker-registry)", "")
            return
        _measure(tmp, address, size_mb, rounds)


def _measure(tmp: Path, address: str, size_mb: int, rounds: int) -> None:
    work = tmp / "fleet"
    # make_dinov2_vpr's two weights take 364 bytes per hidden unit, pad_mb asks for 256.
    models = [make_dinov2_vpr(work / "models" / f"m{i}.onnx", seed=i + 1, pad_mb=size_mb * 256 // 364)
              for i in range(3)]
    keys = work / "keys"
    keys.mkdir()
    _ok("fleet", "keygen", str(keys / "fleet.pem"), str(keys / "fleet.pub.pem"))
    fleet_section = {"repository": f"{address}/fleet/engines", "insecure": True,
                     "private_key_file": str(keys / "fleet.pem"),
                     "public_key_file": str(keys / "fleet.pub.pem")}
    reference = _config(work / "reference", models, fleet_section)
    robot = _config(work / "robot", models, fleet_section)
    _ok("--config", str(reference), "run")
    _ok("--config", str(reference), "push")
    cache = robot.parent / "cache"
    _ok("--config", str(robot), "pull")
    [sku] = [p for p in (cache / "candidates").iterdir() if p.is_dir()]
    layers = [d["digest"] for d in json.loads((sku / "manifest.json").read_text())["layers"]]
    engines = [cache / p.name for p in sorted((work / "reference" / "cache").glob("*.ort"))]
    total_mb = sum((work / "reference" / "cache" / e.name).stat().st_size for e in engines) / MB
    promoted: list[dict[str, Any]] = []

    def no_candidates() -> None:
        shutil.rmtree(cache / "candidates")

    def no_engines() -> None:
        for path in cache.iterdir():
            if path.is_file() and (".ort" in path.name or path.name == ".engine-init.warm.json"):
                path.unlink()

    def promote() -> None:
        promoted.append(_summary(_ok("--config", str(robot), "run")))

    def nothing() -> None:
        pass

    store = work / "reference-store"
    py = sys.executable

    def no_store() -> None:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()

    def pull_reference(folder: str) -> Callable[[], object]:
        return lambda: subprocess.run([py, "-c", PULL_REFERENCE, address, "fleet/engines", folder,
                                       *layers], check=True, cwd=REPO)

    best = _rounds(rounds, {
        "pull": (no_candidates, lambda: _ok("--config", str(robot), "pull")),
        "pull_ref": (nothing, pull_reference("-")),
        "pull_ref_store": (no_store, pull_reference(str(store))),
        "promote": (no_engines, promote),
        "warm": (nothing, lambda: _ok("--config", str(robot), "run")),
        "load": (nothing, lambda: subprocess.run([py, "-c", DESERIALIZE, *map(str, engines)],
                                                 check=True)),
    })
    pull, stored, ref = best["pull"], best["pull_ref_store"], best["pull_ref"]
    report(f"fleet: engine-init pull, 3 x {total_mb / 3:.0f} MB, loopback registry",
           f"{pull:.3f} s / ref process storing and fsyncing {stored:.3f} s = {pull / stored:.2f}x",
           check(pull <= 1.3 * stored))
    report("  vs the reference storing nothing", f"{ref:.3f} s: {pull / ref:.2f}x", "")
    both = best["warm"] + best["load"]
    report("fleet: engine-init run promoting them",
           f"{best['promote']:.3f} s / {both:.3f} s = {best['promote'] / both:.2f}x",
           check(best["promote"] <= 1.3 * both))
    report("  reference: warm run + the backend's load (a process)",
           f"{best['warm']:.3f} s + {best['load']:.3f} s", "")
    built = {(s["engines_built"], s["engines_promoted"]) for s in promoted}
    report("fleet: local builds in the promoting runs", f"{sorted(built)} (built, promoted)",
           check(built == {(0, 3)}))
