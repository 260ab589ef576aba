"""Early hashing of last boot's engines: real files, real threads; a digest is handed over only
for the very file that was hashed."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from app.cache import sidecar, warm
from app.cache.sidecar import hash_file
from tests.helpers import cli, write_job_config


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    yield
    for job in list(warm._STARTED.values()):
        job.done.wait(10)
    warm._STARTED.clear()


def engines(root, count=3, size=3 * 1024 * 1024 + 17):
    paths = []
    for i in range(count):
        path = root / f"m{i}__ort1.20_x86_64-00000000_fp32.ort"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def test_hinted_engines_are_hashed_early_and_handed_over(tmp_path, monkeypatch):
    paths = engines(tmp_path)
    assert warm.write_hint(tmp_path, [p.name for p in paths]) is True
    before = sys.getswitchinterval()
    assert warm.start(tmp_path) == 3
    calls = []
    monkeypatch.setattr(sidecar, "_file_digest", lambda *a: calls.append(a))
    for path in paths:
        assert hash_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert calls == []  # every digest came from the early threads
    assert warm._STARTED == {} and sys.getswitchinterval() == before


def test_a_replaced_or_changed_engine_is_hashed_again(tmp_path):
    replaced, changed, same = engines(tmp_path)
    warm.write_hint(tmp_path, [replaced.name, changed.name, same.name])
    warm.start(tmp_path)
    for job in list(warm._STARTED.values()):
        job.done.wait(10)
    new = tmp_path / "new"
    new.write_bytes(b"another engine")
    os.replace(new, replaced)  # a rebuild publishes by rename: a new inode
    with open(changed, "r+b") as handle:
        handle.write(b"corrupted in place")
    for path in (replaced, changed, same):
        assert hash_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_take_without_a_start_is_none(tmp_path):
    (path,) = engines(tmp_path, 1)
    assert warm.take(path, os.stat(path)) is None


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"engines": "m0"}', b'{"engines": null}', b"{" * 100_000,
    b"[" * 60_000, b"\xff\xfe",
])
def test_an_unusable_hint_starts_nothing(tmp_path, content):
    engines(tmp_path)
    (tmp_path / warm.HINT_NAME).write_bytes(content)
    assert warm.read_hint(tmp_path) == []
    assert warm.start(tmp_path) == 0


def test_a_fifo_or_a_link_as_the_hint_is_not_read(tmp_path):
    os.mkfifo(tmp_path / warm.HINT_NAME)
    assert warm.read_hint(tmp_path) == []  # returns at once: no writer is waited for
    os.unlink(tmp_path / warm.HINT_NAME)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"engines": ["m0.engine"]}))
    (tmp_path / warm.HINT_NAME).symlink_to(elsewhere)
    assert warm.read_hint(tmp_path) == []


def test_a_hint_names_only_plain_files_of_the_cache(tmp_path):
    (tmp_path / warm.HINT_NAME).write_text(json.dumps({"engines": [
        "../outside", "/etc/passwd", ".engine-init.lock", "", 7, "a\0b", "good.engine",
        *[f"e{i}.engine" for i in range(40)]]}))
    names = warm.read_hint(tmp_path)
    assert names[0] == "good.engine" and len(names) == warm._MAX_ENGINES
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_symlinks_and_special_files_are_not_hashed_early(tmp_path):
    target = tmp_path.parent / f"{tmp_path.name}-outside"
    target.write_bytes(b"secret")
    (tmp_path / "link.engine").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.engine")
    warm.write_hint(tmp_path, ["link.engine", "fifo.engine", "absent.engine"])
    assert warm.start(tmp_path) == 3
    for job in list(warm._STARTED.values()):
        assert job.done.wait(10)
        assert job.digest is None


def test_the_hint_is_rewritten_only_when_the_engines_change(tmp_path):
    assert warm.write_hint(tmp_path, ["a.engine", "b.engine"]) is True
    mtime = os.stat(tmp_path / warm.HINT_NAME).st_mtime_ns
    assert warm.write_hint(tmp_path, ["a.engine", "b.engine"]) is False
    assert os.stat(tmp_path / warm.HINT_NAME).st_mtime_ns == mtime
    assert warm.write_hint(tmp_path, ["a.engine"]) is True
    assert warm.read_hint(tmp_path) == ["a.engine"]


def test_a_hint_that_cannot_be_written_does_not_fail_the_boot(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / warm.HINT_NAME).mkdir()  # a folder where the file goes
    done = cli("--config", str(job), "--debug", "run")
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert "c10.cache.hint.unwritten" in kinds and "c10.marker.written" in kinds
