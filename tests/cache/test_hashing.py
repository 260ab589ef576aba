"""The hashing primitive (streaming memory, the loop without hashlib.file_digest, the early
digest handed in and refused for anything that is not that very file), sha256 sidecars (format,
and verification that never raises), and the early hashing of last run's engines: real files,
real threads; a digest is handed over only for the very file that was hashed, through the
object ``start`` returns (no process state)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import Sha256Sidecar
from app.cache import hashing
from app.cache.hashing import EarlyDigests, hash_file, sidecar_path
from tests.helpers import cli, write_job_config


class Given:
    """A stand-in for EarlyDigests: hands over a fixed digest and records what it was asked."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.asked: list[tuple[str, int]] = []

    def take(self, path, opened):
        self.asked.append((str(path), opened.st_ino))
        return self.digest


def test_an_early_digest_is_asked_for_the_opened_file(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"engine")
    early = Given("e" * 64)
    assert hash_file(path, early) == "e" * 64
    assert early.asked == [(str(path), os.stat(path).st_ino)]
    assert hash_file(path) == hashlib.sha256(b"engine").hexdigest()


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_only_a_regular_file_is_hashed_or_handed_over(tmp_path, kind):
    path = tmp_path / "m.engine"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        (tmp_path / "target").write_bytes(b"x")
        path.symlink_to(tmp_path / "target")
    early = Given("e" * 64)
    with pytest.raises((OSError, ValueError)):
        hash_file(path, early)
    assert early.asked == []


def test_hashing_streams_in_constant_memory(tmp_path):
    """Peak RSS of hashing a 256 MiB file stays far below the file size."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(256 << 20)
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
    code = ("from app.cache.hashing import hash_file; "
            f"hash_file(__import__('pathlib').Path({str(big)!r})); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    peak_kib = int(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert peak_kib < 64 * 1024, f"peak RSS {peak_kib} KiB while hashing 256 MiB"
    assert hash_file(big) == hashlib.sha256(b"\0" * (256 << 20)).hexdigest()


def test_the_loop_without_file_digest_gives_the_same_digest(tmp_path, monkeypatch):
    """Python 3.10 has no hashlib.file_digest: hash_file then reads through sha256_fd."""
    path = tmp_path / "m.engine"
    path.write_bytes(os.urandom(3 * hashing.CHUNK_BYTES + 5))
    monkeypatch.setattr(hashing, "_file_digest", None)
    assert hash_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_copy_hashed_reads_once_for_the_digest_and_the_copy(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    payload = os.urandom(3 << 20)
    source.write_bytes(payload)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert hashing.copy_hashed(source, fd) == (hashlib.sha256(payload).hexdigest(), len(payload))
    finally:
        os.close(fd)
    assert target.read_bytes() == payload
    assert hashing.copy_hashed(source) == (hashlib.sha256(payload).hexdigest(), len(payload))


def test_copy_hashed_across_chunks_from_a_descriptor_writes_what_it_hashes(tmp_path):
    """Several chunks: each written by the second thread while the next is read into the
    other buffer; the copy is byte for byte the source, whose digest is returned."""
    source, target = tmp_path / "source", tmp_path / "target"
    payload = os.urandom(hashing.CHUNK_BYTES * 2 + 12345)
    source.write_bytes(payload)
    fd, out = os.open(source, os.O_RDONLY), os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        got = hashing.copy_hashed(fd, out)
        assert os.read(fd, 1) == b""  # read from where it stood, to the end, and left open
    finally:
        os.close(fd)
        os.close(out)
    assert got == (hashlib.sha256(payload).hexdigest(), len(payload))
    assert target.read_bytes() == payload


def test_copy_hashed_with_a_limit_reads_one_byte_past_it(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    with source.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB of holes
    with target.open("wb") as out:
        digest, size = hashing.copy_hashed(source, out.fileno(), limit=1000)
    assert size == 1001 and target.stat().st_size == 1001
    assert digest == hashlib.sha256(b"\0" * 1001).hexdigest()



def test_write_then_verify(tmp_path):
    path = tmp_path / "m.engine"
    digest = Sha256Sidecar.write_atomic_and_sidecar(path, b"engine bytes")
    assert digest == hashlib.sha256(b"engine bytes").hexdigest()
    assert path.read_bytes() == b"engine bytes"
    assert sidecar_path(path).read_text() == digest
    assert sidecar_path(path).name == "m.engine.sha256"
    assert Sha256Sidecar.verify(path)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_verify_is_false_never_raising(tmp_path):
    path = tmp_path / "m.engine"
    assert Sha256Sidecar.verify(path) is False                 # nothing at all
    path.write_bytes(b"x")
    assert Sha256Sidecar.verify(path) is False                 # no sidecar
    sidecar_path(path).write_text("nothex" * 10)
    assert Sha256Sidecar.verify(path) is False                 # malformed
    sidecar_path(path).write_text(hashlib.sha256(b"y").hexdigest())
    assert Sha256Sidecar.verify(path) is False                 # mismatch
    sidecar_path(path).write_text(hashlib.sha256(b"x").hexdigest().upper())
    assert Sha256Sidecar.verify(path) is False                 # uppercase is not our format
    sidecar_path(path).write_bytes(hashlib.sha256(b"x").hexdigest().encode() + b" " * 500)
    assert Sha256Sidecar.verify(path) is False                 # oversized
    sidecar_path(path).write_text(hashlib.sha256(b"x").hexdigest() + "\n")
    assert Sha256Sidecar.verify(path) is True                  # hand-written with a newline


def test_symlinked_engine_is_not_followed(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"evil")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "m.engine").symlink_to(outside)
    sidecar_path(cache / "m.engine").write_text(hashlib.sha256(b"evil").hexdigest())
    assert Sha256Sidecar.verify(cache / "m.engine") is False


def test_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "m.engine")
    sidecar_path(tmp_path / "m.engine").write_text("0" * 64)
    assert Sha256Sidecar.verify(tmp_path / "m.engine") is False


def test_directory_is_false(tmp_path):
    (tmp_path / "m.engine").mkdir()
    sidecar_path(tmp_path / "m.engine").write_text("0" * 64)
    assert Sha256Sidecar.verify(tmp_path / "m.engine") is False


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_sidecar_reader_never_raises_on_any_content(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "e").write_bytes(b"payload")
    sidecar_path(folder / "e").write_bytes(content)
    expected = content.strip() == hashlib.sha256(b"payload").hexdigest().encode()
    assert Sha256Sidecar.verify(folder / "e") is expected

def engines(root, count=3, size=3 * 1024 * 1024 + 17):
    paths = []
    for i in range(count):
        path = root / f"m{i}__ort1.20_x86_64-00000000_fp32.ort"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def finish(results: EarlyDigests) -> None:
    for done in results._jobs.values():
        assert done.wait(10)


def test_hinted_engines_are_hashed_early_and_handed_over(tmp_path, monkeypatch):
    paths = engines(tmp_path)
    assert hashing.write_hint(tmp_path, [p.name for p in paths]) is True
    before = sys.getswitchinterval()
    results = hashing.start(tmp_path)
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
    hashing.write_hint(tmp_path, [path.name])
    first, second = hashing.start(tmp_path), hashing.start(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.take(path, os.stat(path)) == digest
    assert second.take(path, os.stat(path)) == digest


def test_a_replaced_or_changed_engine_is_hashed_again(tmp_path):
    replaced, changed, same = engines(tmp_path)
    hashing.write_hint(tmp_path, [replaced.name, changed.name, same.name])
    results = hashing.start(tmp_path)
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
    assert EarlyDigests().take(path, os.stat(path)) is None
    assert len(hashing.start(tmp_path)) == 0  # no hint


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"engines": "m0"}', b'{"engines": null}', b"{" * 100_000,
    b"[" * 60_000, b"\xff\xfe",
])
def test_an_unusable_hint_starts_nothing(tmp_path, content):
    engines(tmp_path)
    (tmp_path / hashing.HINT_NAME).write_bytes(content)
    assert hashing.read_hint(tmp_path) == []
    assert len(hashing.start(tmp_path)) == 0


def test_a_fifo_or_a_link_as_the_hint_is_not_read(tmp_path):
    os.mkfifo(tmp_path / hashing.HINT_NAME)
    assert hashing.read_hint(tmp_path) == []  # returns at once: no writer is waited for
    os.unlink(tmp_path / hashing.HINT_NAME)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"engines": ["m0.engine"]}))
    (tmp_path / hashing.HINT_NAME).symlink_to(elsewhere)
    assert hashing.read_hint(tmp_path) == []


def test_a_hint_names_only_plain_files_of_the_cache(tmp_path):
    (tmp_path / hashing.HINT_NAME).write_text(json.dumps({"engines": [
        "../outside", "/etc/passwd", ".engine-init.lock", "", 7, "a\0b", "good.engine",
        *[f"e{i}.engine" for i in range(40)]]}))
    names = hashing.read_hint(tmp_path)
    assert names[0] == "good.engine" and len(names) == hashing._MAX_ENGINES
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_symlinks_and_special_files_are_not_hashed_early(tmp_path):
    target = tmp_path.parent / f"{tmp_path.name}-outside"
    target.write_bytes(b"secret")
    (tmp_path / "link.engine").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.engine")
    hashing.write_hint(tmp_path, ["link.engine", "fifo.engine", "absent.engine"])
    results = hashing.start(tmp_path)
    assert len(results) == 3
    finish(results)
    assert results._found == {}


def test_candidates_are_not_hashed_early(tmp_path):
    """A first boot after a pull: promotion hashes what it copies, nothing is hashed ahead."""
    files = tmp_path / "candidates" / "sku-a" / "files"
    files.mkdir(parents=True)
    engines(files, 2)
    assert len(hashing.start(tmp_path)) == 0


def test_the_hint_is_rewritten_only_when_the_engines_change(tmp_path):
    assert hashing.write_hint(tmp_path, ["a.engine", "b.engine"]) is True
    mtime = os.stat(tmp_path / hashing.HINT_NAME).st_mtime_ns
    assert hashing.write_hint(tmp_path, ["a.engine", "b.engine"]) is False
    assert os.stat(tmp_path / hashing.HINT_NAME).st_mtime_ns == mtime
    assert hashing.write_hint(tmp_path, ["a.engine"]) is True
    assert hashing.read_hint(tmp_path) == ["a.engine"]


def test_a_hint_that_cannot_be_written_does_not_fail_the_boot(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / hashing.HINT_NAME).mkdir()  # a folder where the file goes
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
    real_start, real_take = hashing.start, EarlyDigests.take

    def start(root):
        started.append(root)
        return real_start(root)

    def take(self, path, opened):
        digest = real_take(self, path, opened)
        handed.append((path.name, digest))
        return digest

    monkeypatch.setattr(hashing, "start", start)
    monkeypatch.setattr(EarlyDigests, "take", take)
    assert main(["--config", str(job), "run"]) == 0
    assert started == [tmp_path / "cache"]
    engines = sorted(p.name for p in (tmp_path / "cache").glob("*.ort"))
    assert len(engines) == 3
    assert sorted(name for name, digest in handed if digest) == engines
    # A config that does not validate starts nothing.
    job.write_text(job.read_text().replace("backend: onnxruntime", "backend: cuda"))
    assert main(["--config", str(job), "run"]) == 78
    assert len(started) == 1
