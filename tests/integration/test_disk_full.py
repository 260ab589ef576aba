"""A full disk: exit 74 naming the bytes needed, no temp file left, valid engines still valid.
A real small tmpfs where this machine lets us mount one; injected ENOSPC in any case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, sha256, tmpfs
from tools.demo import make_dinov2_vpr


def _valid_engines(cache: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in cache.glob("*.ort")}


def test_injected_enospc(job):
    assert cli("--config", str(job), "run").returncode == 0
    cache = job.parent / "cache"
    before = {p.name: p.read_bytes() for p in cache.iterdir()
              if p.is_file() and p.name != ".engine-init.lock"}
    doc = yaml.safe_load(job.read_text())
    doc["workspace_mb"] = 1234  # every engine must be rebuilt
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run", env={"ENGINE_INIT_FAULTS": "enospc_after=2000"})
    assert result.returncode == 74, result.stderr
    assert "no space left" in result.stderr and "bytes needed" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in cache.iterdir() if ".tmp-" in p.name] == []
    assert not (job.parent / "run" / "ready.json").exists()
    after = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file() and p.name in before}
    engines_before = {k: v for k, v in before.items() if k.endswith((".ort", ".sha256"))}
    assert {k: after[k] for k in engines_before} == engines_before  # engines and sidecars intact


@pytest.fixture
def small_fs(tmp_path):
    with tmpfs(tmp_path / "small", "size=300k") as mount:
        yield mount


def test_real_small_filesystem(small_fs, job, corpus, tmp_path):
    big = make_dinov2_vpr(tmp_path / "big.onnx", pad_mb=1)  # a ~1.5 MB artifact; 300 KB of room
    doc = yaml.safe_load(job.read_text())
    doc["cache_root"] = str(small_fs / "cache")
    doc["backbones"] = [doc["backbones"][2],
                        {"model_name": "big", "onnx_path": str(big), "expected_input_shape": [1, 3, 32, 32]}]
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 74, result.stderr
    needed = json.dumps(result.stderr)
    assert "no space left" in needed and "bytes needed" in needed
    cache = small_fs / "cache"
    assert [p.name for p in cache.iterdir() if ".tmp-" in p.name] == []
    valid = _valid_engines(cache)
    assert list(valid) == [p.name for p in cache.glob("aliked*.ort")]  # the small one was built
    assert not (job.parent / "run" / "ready.json").exists()
    shutil.rmtree(cache / "calibration", ignore_errors=True)
    assert cli("--config", str(job), "status").returncode == 0
    assert _valid_engines(cache) == valid
