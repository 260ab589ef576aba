"""The readiness marker is the only file the job removes or replaces outside the cache, and only
when it is an engine-init marker: real CLI processes against files planted at its path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, json_events

SOMEONES = b"# robot calibration notes\nwheel_base: 0.42\n"


def _config(job: Path, **changes: object) -> None:
    doc = yaml.safe_load(job.read_text())
    doc.update(changes)
    job.write_text(yaml.safe_dump(doc))


def _plant_file(path: Path) -> None:
    path.write_bytes(SOMEONES)


def _plant_folder(path: Path) -> None:
    path.mkdir()
    (path / "data.txt").write_bytes(SOMEONES)


def _plant_fifo(path: Path) -> None:
    os.mkfifo(path)


def _plant_link(path: Path) -> None:
    path.with_name("target.txt").write_bytes(SOMEONES)
    path.symlink_to(path.with_name("target.txt"))


def _state(path: Path) -> tuple[object, ...]:
    st = os.lstat(path)
    content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    inside = sorted((p.name, p.read_bytes()) for p in path.iterdir()) if path.is_dir() else None
    return st.st_mode, st.st_ino, st.st_mtime_ns, content, inside


PLANTS = [_plant_file, _plant_folder, _plant_fifo, _plant_link]


@pytest.mark.parametrize("plant", PLANTS, ids=[f.__name__.removeprefix("_plant_") for f in PLANTS])
def test_run_refuses_what_is_not_a_marker_and_leaves_it(job, plant):
    target = job.parent / "run" / "notes.txt"
    plant(target)
    before = _state(target)
    _config(job, readiness_marker=str(target))
    result = cli("--config", str(job), "run", timeout=60)  # a FIFO must not hang it
    assert result.returncode == 73, result.stderr[-800:]
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("engine-init: error:"))
    assert str(target) in line and "Traceback" not in result.stderr
    assert _state(target) == before
    assert not list((job.parent / "cache").glob("*.ort"))  # refused before any work


def test_a_config_error_leaves_someones_file_at_a_typod_marker_path(job):
    target = job.parent / "notes.txt"
    target.write_bytes(SOMEONES)
    before = _state(target)
    _config(job, readiness_marker=str(target), backend="cuda")
    result = cli("--config", str(job), "run")
    assert result.returncode == 78 and "backend" in result.stderr
    assert _state(target) == before
    [refused] = [e for e in json_events(result.stderr) if e["kind"] == "c10.marker.refused"]
    assert str(target) in refused["msg"]


def test_a_config_error_removes_a_real_old_marker(job):
    assert cli("--config", str(job), "run").returncode == 0
    marker = job.parent / "run" / "ready.json"
    assert marker.exists()
    _config(job, backend="cuda")
    result = cli("--config", str(job), "run")
    assert result.returncode == 78
    assert not marker.exists()
    assert "c10.marker.cleared" in [e["kind"] for e in json_events(result.stderr)]


@pytest.mark.parametrize(("text", "env"), [
    ("readiness_marker: {marker}\nbackend: [unclosed\n", {}),
    ("readiness_marker: {marker}\nbackend: cuda\nbackend: tensorrt\n", {}),  # duplicate key
    ("readiness_marker: {marker}\nbackend: [unclosed\n", {"ENGINE_INIT_READINESS_MARKER": "{marker}"}),
    (b"readiness_marker: {marker}\n\xff\xfe\n", {}),  # not UTF-8
])
def test_a_config_that_does_not_parse_removes_nothing(job, text, env):
    assert cli("--config", str(job), "run").returncode == 0
    marker = job.parent / "run" / "ready.json"
    before = _state(marker)
    if isinstance(text, bytes):
        job.write_bytes(text.replace(b"{marker}", str(marker).encode()))
    else:
        job.write_text(text.format(marker=marker))
    result = cli("--config", str(job), "run", env={k: v.format(marker=marker) for k, v in env.items()})
    assert result.returncode == 78, result.stderr[-800:]
    assert _state(marker) == before
    assert "c10.marker.cleared" not in [e["kind"] for e in json_events(result.stderr)]
