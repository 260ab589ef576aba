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

__all__ = ["CHUNK_BYTES", "EarlyDigests", "copy_hashed", "hash_file", "hash_opened", "sha256_fd",
           "sha256_of"]

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
    return hash_opened(path, early)[0]


def hash_opened(path: Path, early: EarlyDigests | None = None,
                size: int | None = None) -> tuple[str, os.stat_result]:
    """:func:`hash_file`, with the stat of the very file it opened and hashed; ``size``: a
    ValueError, before any byte is read, unless the file holds that many bytes."""
    with os.fdopen(open_regular(path), "rb", buffering=0) as handle:
        opened = os.fstat(handle.fileno())
        if size is not None and opened.st_size != size:
            raise ValueError(f"it holds {opened.st_size} bytes, not the {size} expected")
        digest = early.take(Path(path), opened) if early is not None else None
        return (digest if digest is not None else sha256_of(handle)), opened


def copy_hashed(source: Path | int, out: int | None = None) -> tuple[str, int]:
    """sha256 and size of the regular file ``source`` (a path: opened without following a
    link; a descriptor: read from where it stands, left open), its bytes also written to the
    file descriptor ``out`` when given: one read serves both, so the bytes hashed are the
    bytes written."""
    owned = not isinstance(source, int)
    fd = open_regular(source) if not isinstance(source, int) else source
    digest, size = hashlib.sha256(), 0
    buf = bytearray(CHUNK_BYTES)
    try:
        with memoryview(buf) as view:
            while n := os.readv(fd, [buf]):
                digest.update(view[:n])
                size += n
                done = 0
                while out is not None and done < n:
                    done += os.write(out, view[done:n])
    finally:
        if owned:
            os.close(fd)
    return digest.hexdigest(), size
