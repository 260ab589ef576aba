"""Early hashing of last run's engines: real files, real threads; a digest is handed over only
for the very file that was hashed, through the object ``start`` returns (no process state)."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from app.cache import hashing, prehash
from app.cache.hashing import hash_file
from app.cache.prehash import PrehashResults
from tests.helpers import cli, write_job_config


def engines(root, count=3, size=3 * 1024 * 1024 + 17):
    paths = []
    for i in range(count):
        path = root / f"m{i}__ort1.20_x86_64-00000000_fp32.ort"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def finish(results: PrehashResults) -> None:
    for job in results._jobs.values():
        assert job.done.wait(10)


def test_hinted_engines_are_hashed_early_and_handed_over(tmp_path, monkeypatch):
    paths = engines(tmp_path)
    assert prehash.write_hint(tmp_path, [p.name for p in paths]) is True
    before = sys.getswitchinterval()
    results = prehash.start(tmp_path)
    assert len(results) == 3
    assert sys.getswitchinterval() == before  # nothing process-wide is tuned for it
    # The early threads hash through the same primitive: patch it only once they are done, so
    # that any call seen below is the verifier's own.
    finish(results)
    calls = []
    monkeypatch.setattr(hashing, "_file_digest", lambda *a: calls.append(a))
    for path in paths:
        assert hash_file(path, results) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert calls == []  # every digest came from the early threads
    assert len(results) == 0  # each handed over once
    monkeypatch.undo()
    assert hash_file(paths[0], results) == hashlib.sha256(paths[0].read_bytes()).hexdigest()


def test_two_starts_are_independent(tmp_path):
    (path,) = engines(tmp_path, 1)
    prehash.write_hint(tmp_path, [path.name])
    first, second = prehash.start(tmp_path), prehash.start(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.take(path, os.stat(path)) == digest
    assert second.take(path, os.stat(path)) == digest


def test_a_replaced_or_changed_engine_is_hashed_again(tmp_path):
    replaced, changed, same = engines(tmp_path)
    prehash.write_hint(tmp_path, [replaced.name, changed.name, same.name])
    results = prehash.start(tmp_path)
    finish(results)
    new = tmp_path / "new"
    new.write_bytes(b"another engine")
    os.replace(new, replaced)  # a rebuild publishes by rename: a new inode
    with open(changed, "r+b") as handle:
        handle.write(b"corrupted in place")
    assert results.take(replaced, os.stat(replaced)) is None
    assert results.take(changed, os.stat(changed)) is None
    for path in (replaced, changed, same):
        assert hash_file(path, results) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_nothing_started_hands_over_nothing(tmp_path):
    (path,) = engines(tmp_path, 1)
    assert PrehashResults().take(path, os.stat(path)) is None
    assert len(prehash.start(tmp_path)) == 0  # no hint


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"engines": "m0"}', b'{"engines": null}', b"{" * 100_000,
    b"[" * 60_000, b"\xff\xfe",
])
def test_an_unusable_hint_starts_nothing(tmp_path, content):
    engines(tmp_path)
    (tmp_path / prehash.HINT_NAME).write_bytes(content)
    assert prehash.read_hint(tmp_path) == []
    assert len(prehash.start(tmp_path)) == 0


def test_a_fifo_or_a_link_as_the_hint_is_not_read(tmp_path):
    os.mkfifo(tmp_path / prehash.HINT_NAME)
    assert prehash.read_hint(tmp_path) == []  # returns at once: no writer is waited for
    os.unlink(tmp_path / prehash.HINT_NAME)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"engines": ["m0.engine"]}))
    (tmp_path / prehash.HINT_NAME).symlink_to(elsewhere)
    assert prehash.read_hint(tmp_path) == []


def test_a_hint_names_only_plain_files_of_the_cache(tmp_path):
    (tmp_path / prehash.HINT_NAME).write_text(json.dumps({"engines": [
        "../outside", "/etc/passwd", ".engine-init.lock", "", 7, "a\0b", "good.engine",
        *[f"e{i}.engine" for i in range(40)]]}))
    names = prehash.read_hint(tmp_path)
    assert names[0] == "good.engine" and len(names) == prehash._MAX_ENGINES
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_symlinks_and_special_files_are_not_hashed_early(tmp_path):
    target = tmp_path.parent / f"{tmp_path.name}-outside"
    target.write_bytes(b"secret")
    (tmp_path / "link.engine").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.engine")
    prehash.write_hint(tmp_path, ["link.engine", "fifo.engine", "absent.engine"])
    results = prehash.start(tmp_path)
    assert len(results) == 3
    finish(results)
    assert [job.digest for job in results._jobs.values()] == [None, None, None]


def test_candidates_are_not_hashed_early(tmp_path):
    """A first boot after a pull: promotion hashes what it copies, nothing is hashed ahead."""
    files = tmp_path / "candidates" / "sku-a" / "files"
    files.mkdir(parents=True)
    engines(files, 2)
    assert len(prehash.start(tmp_path)) == 0


def test_the_hint_is_rewritten_only_when_the_engines_change(tmp_path):
    assert prehash.write_hint(tmp_path, ["a.engine", "b.engine"]) is True
    mtime = os.stat(tmp_path / prehash.HINT_NAME).st_mtime_ns
    assert prehash.write_hint(tmp_path, ["a.engine", "b.engine"]) is False
    assert os.stat(tmp_path / prehash.HINT_NAME).st_mtime_ns == mtime
    assert prehash.write_hint(tmp_path, ["a.engine"]) is True
    assert prehash.read_hint(tmp_path) == ["a.engine"]


def test_a_hint_that_cannot_be_written_does_not_fail_the_boot(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / prehash.HINT_NAME).mkdir()  # a folder where the file goes
    done = cli("--config", str(job), "--debug", "run")
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert "c10.cache.hint.unwritten" in kinds and "c10.marker.written" in kinds


def test_run_starts_hashing_once_the_config_is_valid_and_hands_the_digests_over(
        tmp_path, corpus, monkeypatch):
    from app.cli import main

    job = write_job_config(tmp_path, corpus)
    assert main(["--config", str(job), "run"]) == 0  # cold: builds, names its engines
    started, handed = [], []
    real_start, real_take = prehash.start, PrehashResults.take

    def start(root):
        started.append(root)
        return real_start(root)

    def take(self, path, opened):
        digest = real_take(self, path, opened)
        handed.append((path.name, digest))
        return digest

    monkeypatch.setattr(prehash, "start", start)
    monkeypatch.setattr(PrehashResults, "take", take)
    assert main(["--config", str(job), "run"]) == 0
    assert started == [tmp_path / "cache"]
    engines = sorted(p.name for p in (tmp_path / "cache").glob("*.ort"))
    assert len(engines) == 3
    assert sorted(name for name, digest in handed if digest) == engines
    # A config that does not validate starts nothing.
    job.write_text(job.read_text().replace("backend: onnxruntime", "backend: cuda"))
    assert main(["--config", str(job), "run"]) == 78
    assert len(started) == 1
