"""Every kind of file planted at every path the job reads, against the real CLI (``run`` in a
subprocess, the ONNX Runtime backend, generated models): nothing hangs or crashes it. Damage is
a warning event and a rebuild of that engine only (or a replaced lock file); a folder, which
may hold someone's data, is refused with a one-line error naming it. A link is never followed
and its target never changed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import PLANTED_KINDS, cli, json_events, plant

FOLDERS = ("folder", "folder-with-data")
#: Where the job reads, relative to a job folder (``{engine}``: the first model's artifact).
PATHS = {
    "engine": "cache/{engine}",
    "sidecar": "cache/{engine}.sha256",
    "record": "cache/{engine}.record.json",
    "lock": "cache/.engine-init.lock",
    "hint": "cache/.engine-init.warm.json",
    "timing": "cache/timing",
    "calibration": "cache/calibration",
    "marker": "run/ready.json",
}


def _write_config(root: Path, corpus: dict[str, Path], **overrides: Any) -> Path:
    """Two of the demo's models (fp32) with cache and marker under ``root``; ``overrides``:
    other top-level keys."""
    doc: dict[str, Any] = {
        "cache_root": str(root / "cache"), "readiness_marker": str(root / "run" / "ready.json"),
        "backend": "onnxruntime", "precision": "fp32", "lock_timeout_s": 20,
        "backbones": [
            {"model_name": "dinov2_vpr", "onnx_path": str(corpus["dinov2_vpr"]),
             "expected_input_shape": [1, 3, 32, 32]},
            {"model_name": "aliked", "onnx_path": str(corpus["aliked"]),
             "expected_input_shape": [1, 3, 64, 64]},
        ],
        **overrides,
    }
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(doc))
    return root / "config.yaml"


@pytest.fixture(scope="module")
def warm_job(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Path:
    """A job folder after one successful run: engines, companions, lock, hint, marker."""
    root = tmp_path_factory.mktemp("warm")
    done = cli("--config", str(_write_config(root, corpus)), "run")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def job(warm_job: Path, tmp_path: Path, corpus: dict[str, Path]) -> Path:
    root = tmp_path / "job"
    shutil.copytree(warm_job, root, symlinks=True)
    _write_config(root, corpus)
    return root


def _run(root: Path) -> tuple[int, str, str, list[dict[str, Any]]]:
    # A hang fails the test (subprocess.TimeoutExpired) instead of blocking the suite.
    done = cli("--config", str(root / "config.yaml"), "run", timeout=60)
    return done.returncode, done.stdout, done.stderr, json_events(done.stderr)


def _kinds(events: list[dict[str, Any]], level: str) -> set[str]:
    return {e["kind"] for e in events if e["level"] == level}


@pytest.mark.parametrize("kind", PLANTED_KINDS)
@pytest.mark.parametrize("where", list(PATHS))
def test_planted(job: Path, where: str, kind: str) -> None:
    engine = next((job / "cache").glob("dinov2_vpr__*.ort")).name
    path = job / PATHS[where].format(engine=engine)
    target = plant(path, kind, job / "outside")
    target_bytes = target.read_bytes() if target is not None else None
    code, stdout, stderr, events = _run(job)

    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    assert list((job / "cache").glob(".*.tmp-*")) == []
    if target is not None:
        assert target.read_bytes() == target_bytes, "a planted link was followed"
    if kind == "folder-with-data":
        assert (path / "someones-notes.txt").read_text() == "keep me"
    if where == "marker":
        return _marker_case(job, path, kind, code, stderr)

    per_engine = where in ("engine", "sidecar", "record")
    if kind in FOLDERS and (per_engine or where == "lock"):
        # Refused before any work, naming the folder, which stays as it was.
        assert code == 73, stderr[-1500:]
        [line] = [ln for ln in stderr.splitlines() if ln.startswith("engine-init: error:")]
        assert str(path) in line and "is a folder" in line
        assert path.is_dir() and not (job / "run" / "ready.json").exists()
        assert "c10.engine.compile.start" not in {e["kind"] for e in events}
        return
    assert code == 0, stderr[-1500:]
    assert (job / "run" / "ready.json").is_file()
    if per_engine:
        # That engine only is rebuilt, with a warning saying why; its companions are ours again.
        assert "ready: 1 built, 1 reused" in stdout, stdout
        warned = [e for e in events if e["level"] == "WARNING"
                  and e["kind"] in ("c10.engine.sidecar.mismatch", "c10.engine.provenance.mismatch")]
        assert [e["kv"]["model_name"] for e in warned] == ["dinov2_vpr"], events
        artifact = job / "cache" / engine
        for companion in (artifact, artifact.with_name(engine + ".sha256"),
                          artifact.with_name(engine + ".record.json")):
            assert companion.is_file() and not companion.is_symlink()
        return
    assert "ready: 0 built, 2 reused" in stdout, stdout
    if where == "lock":
        replaced = kind not in ("huge", "sparse-8g")  # a regular file is a lock file
        assert ("c10.cache.damaged" in _kinds(events, "WARNING")) is replaced
        assert path.is_file() and not path.is_symlink()
    elif where == "hint" and kind not in FOLDERS:
        assert path.is_file() and not path.is_symlink()  # rewritten for the next boot
    elif where in ("timing", "calibration", "hint"):
        assert path.is_symlink() or path.exists(), "left as it was"  # not read by this backend


def _marker_case(job: Path, path: Path, kind: str, code: int, stderr: str) -> None:
    """``run`` only removes the previous marker and writes its own (whether it may remove
    someone else's file there is the marker policy's business); ``wait-ready`` reads it."""
    assert code in (0, 73, 74), stderr[-1500:]
    if kind in FOLDERS:
        assert code != 0 and path.is_dir()
        assert str(path) in next(ln for ln in stderr.splitlines()
                                 if ln.startswith("engine-init: error:"))
        waited = cli("--config", str(job / "config.yaml"), "wait-ready", "--timeout", "0.5",
                     timeout=60)
    else:
        # Plant again after the run, and wait for it: read, it must not hang wait-ready.
        if code == 0:
            plant(path, kind, job / "outside-2")
        waited = cli("--config", str(job / "config.yaml"), "wait-ready", "--timeout", "0.5",
                     timeout=60)
    assert waited.returncode == 75, waited.stderr[-1500:]
    assert "cannot read marker" in waited.stderr and "Traceback" not in waited.stderr
