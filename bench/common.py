"""Shared pieces of the benchmarks: timing, reference hashing, warm caches of large engines."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from app.cache.hashing import Sha256Sidecar
from app.cache.record import read_record, write_record
from tools.demo import build_corpus

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
ROWS: list[tuple[str, str, str]] = []


def report(name: str, value: str, verdict: str) -> None:
    ROWS.append((name, value, verdict))
    print(f"{name:<58} {value:<34} {verdict}", flush=True)


def check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def best_of(n: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def best_interleaved(n: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Best of ``n`` for each, in rounds that run each once: drifts of a shared machine fall on
    all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(n):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def reference_hash(paths: list[Path]) -> None:
    """The reference: hashlib over the files in parallel threads, one per core."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_sha256, paths))


# What any Python job with our dependencies pays: the interpreter, click, PyYAML and pydantic's
# BaseModel, then the same engines hashed in threads, one per core.
REFERENCE_IMPORTS = """
import hashlib, os, sys
from concurrent.futures import ThreadPoolExecutor
import click, yaml
from pydantic import BaseModel
"""
REFERENCE_PROCESS = REFERENCE_IMPORTS + """
def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()

with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    list(pool.map(sha256, sys.argv[1:]))
"""


def reference_process(paths: list[Path]) -> None:
    """The process reference: a fresh interpreter that imports what the job imports first,
    then runs :func:`reference_hash`'s schedule."""
    subprocess.run([sys.executable, "-c", REFERENCE_PROCESS, *map(str, paths)], check=True,
                   cwd=REPO)


def per_file_hash(paths: list[Path]) -> None:
    """hashlib with one thread per file: what the job's own hashing does (not the reference)."""
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        list(pool.map(_sha256, paths))


def compile_bytecode() -> None:
    """Compile app/ as pip does when it installs the package (the image has bytecode; a
    checkout run with PYTHONDONTWRITEBYTECODE would compile every module on every start)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "app")], check=True)


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root on Linux), as after a power-on; False if we cannot."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          cwd=REPO, env=full, check=False)


# ``python -m app`` in a process that reports its own peak RSS (VmHWM) at the end.
PEAK = ("import runpy, sys\nsys.argv[0] = 'engine-init'\ntry:\n"
        "    runpy.run_module('app', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    rc = exc.code\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
        " file=sys.stderr)\nsys.exit(rc)\n")


def cli_peak_rss_kib(*args: str) -> int:
    """Peak RSS of one CLI process (VmHWM read at its end, in the same process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    done = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True,
                          cwd=REPO, env=env, check=True)
    return int(done.stderr.strip().splitlines()[-1])


def job_folder(root: Path, engine_mb: int | list[int], count: int = 3) -> Path:
    """A config and a warm cache on the ONNX Runtime backend whose ``count`` engines are each
    ``engine_mb`` MB (or one size each, in the order of their names): real engines built by the
    job, then re-published at that size (random bytes, new sidecar, record updated) as a large
    engine would be."""
    sizes = engine_mb if isinstance(engine_mb, list) else [engine_mb] * count
    count = len(sizes)
    corpus = build_corpus(root / "corpus")
    backbones = []
    base = [("dinov2_vpr", [1, 3, 32, 32]), ("aliked", [1, 3, 64, 64])]
    for i in range(count):
        name, shape = base[i % 2]
        model = root / "corpus" / "models" / f"{name}.onnx"
        backbones.append({"model_name": f"{name}_{i}", "onnx_path": str(model),
                          "expected_input_shape": shape})
    (root / "run").mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "cache_root": str(root / "cache"), "readiness_marker": str(root / "run" / "ready.json"),
        "backend": "onnxruntime", "precision": "fp32", "backbones": backbones}))
    assert cli("--config", str(config), "run").returncode == 0
    for engine, size in zip(sorted((root / "cache").glob("*.ort")), sizes, strict=True):
        inflate(engine, size)
    del corpus
    return config


def inflate(engine: Path, size_mb: int) -> None:
    payload = os.urandom(size_mb * MB)
    digest = Sha256Sidecar.write_atomic_and_sidecar(engine, payload)
    record = read_record(engine).record
    assert record is not None
    write_record(engine, replace(record, engine_sha256=digest, engine_size=len(payload)))


def engines(config: Path) -> list[Path]:
    cache = config.parent / yaml.safe_load(config.read_text())["cache_root"]
    return sorted(cache.glob("*.ort"))


def marker_timings(config: Path) -> dict[str, float]:
    marker = config.parent / yaml.safe_load(config.read_text())["readiness_marker"]
    return dict(json.loads(marker.read_text())["phase_timings_s"])
