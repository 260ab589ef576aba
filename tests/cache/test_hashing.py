"""The hashing primitive: streaming memory, the loop without hashlib.file_digest, the early
digest handed in (and refused for anything that is not that very file)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from app.cache import hashing
from app.cache.hashing import hash_file


class Given:
    """A plain EarlyDigests: hands over a fixed digest and records what it was asked."""

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


def test_hash_opened_checks_the_size_before_reading_and_returns_the_opened_files_stat(tmp_path):
    path = tmp_path / "engine"
    path.write_bytes(b"x" * 1000)
    digest, opened = hashing.hash_opened(path, size=1000)
    assert digest == hashlib.sha256(b"x" * 1000).hexdigest() and opened.st_ino == path.stat().st_ino
    with pytest.raises(ValueError, match="it holds 1000 bytes, not the 999 expected"):
        hashing.hash_opened(path, size=999)


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
