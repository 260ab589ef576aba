"""sha256 of files, streamed through a fixed buffer: the one hashing primitive of the cache.

The verifier (:mod:`app.cache.sidecar`) and the early hashing (:mod:`app.cache.prehash`) both
use it; it imports neither. A digest hashed early is handed in explicitly, as ``early``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Protocol

from app.cache.fsread import open_regular

__all__ = ["CHUNK_BYTES", "EarlyDigests", "hash_file", "sha256_fd", "sha256_of"]

#: Chunk of the Python 3.10 loop: large enough that hashlib releases the GIL for most of the
#: work, small enough to keep memory flat whatever the file size.
CHUNK_BYTES = 4 * 1024 * 1024
_file_digest = getattr(hashlib, "file_digest", None)  # Python >= 3.11


class EarlyDigests(Protocol):
    """Digests computed before the verifier asked (see :class:`app.cache.prehash.Prehash`)."""

    def take(self, path: Path, opened: os.stat_result) -> str | None:
        """The digest of ``path`` if it was hashed early and ``opened`` (the caller's fstat of
        the file it opened) is that very file; None: hash it yourself."""


def sha256_fd(fd: int, chunk: int) -> str:
    """sha256 of what is left to read from ``fd``, through one buffer of ``chunk`` bytes."""
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    with memoryview(buf) as view:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_of(handle: BinaryIO) -> str:
    """sha256 of what is left to read from an unbuffered binary file."""
    if _file_digest is not None:
        # Python >= 3.11: 256 KiB reads and the GIL released while hashing. Measured (bench/)
        # 3-4% faster than a Python loop over larger chunks, and in early-hashing threads that
        # overlap the main thread's work, a third less CPU than 4 MiB reads: the chunk stays in
        # the core's L2 cache between the read and the hash.
        return str(_file_digest(handle, "sha256").hexdigest())
    return sha256_fd(handle.fileno(), CHUNK_BYTES)


def hash_file(path: Path, early: EarlyDigests | None = None) -> str:
    """sha256 of a regular file (UnsafeFileError for anything else), or its digest from ``early``."""
    with os.fdopen(open_regular(path), "rb", buffering=0) as handle:
        digest = early.take(Path(path), os.fstat(handle.fileno())) if early is not None else None
        return digest if digest is not None else sha256_of(handle)
