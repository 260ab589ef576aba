"""Helpers for the attack tests: a job folder, real CLI processes, and the invariants."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cache.record import record_path
from app.cache.sidecar import sidecar_path
from tests.conftest import REPO, cli, json_events, write_job_config

__all__ = ["assert_consistent", "cli", "json_events", "popen_cli", "sha256", "tmpfs"]


@pytest.fixture
def job(tmp_path: Path, corpus: dict[str, Path]) -> Path:
    return write_job_config(tmp_path, corpus)


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
