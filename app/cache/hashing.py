"""sha256 of files, streamed through a fixed buffer, and of bytes in memory (``sha256_bytes``,
the OCI form ``oci_digest``): the one digest helper of the package.

The verifier (:mod:`app.cache.sidecar`) and the early hashing (:mod:`app.cache.prehash`) both
use it; it imports neither. A digest hashed early is handed in explicitly, as ``early``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

from app.cache.fsread import open_regular
from app.cancel import checkpoint

#: Chunk of the Python 3.10 loop: large enough that hashlib releases the GIL for most of the
#: work, small enough to keep memory flat whatever the file size.
CHUNK_BYTES = 4 * 1024 * 1024
_file_digest = getattr(hashlib, "file_digest", None)  # Python >= 3.11


class EarlyDigests(Protocol):
    """Digests computed before the verifier asked (see :class:`app.cache.prehash.Prehash`)."""

    def take(self, path: Path, opened: os.stat_result) -> str | None:
        """The digest of ``path`` if it was hashed early and ``opened`` (the caller's fstat of
        the file it opened) is that very file; None: hash it yourself."""


def sha256_bytes(data: bytes | bytearray | memoryview | str) -> str:
    """sha256 (hex) of bytes in memory; a string is hashed as its UTF-8 bytes."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def oci_digest(raw: bytes | bytearray | memoryview) -> str:
    """The OCI form of ``raw``'s digest, ``sha256:<hex>``, as descriptors name blobs."""
    return "sha256:" + sha256_bytes(raw)


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


def hash_file(path: Path, early: EarlyDigests | None = None, *, follow_links: bool = False) -> str:
    """sha256 of a regular file (UnsafeFileError for anything else), or its digest from ``early``;
    ``follow_links``: a file the user names, which may be a link to a regular file."""
    return hash_opened(path, early, follow_links=follow_links)[0]


def hash_opened(path: Path, early: EarlyDigests | None = None, size: int | None = None, *,
                follow_links: bool = False) -> tuple[str, os.stat_result]:
    """:func:`hash_file`, with the stat of the very file it opened and hashed; ``size``: a
    ValueError, before any byte is read, unless the file holds that many bytes."""
    with os.fdopen(open_regular(path, follow_links=follow_links), "rb", buffering=0) as handle:
        opened = os.fstat(handle.fileno())
        if size is not None and opened.st_size != size:
            raise ValueError(f"it holds {opened.st_size} bytes, not the {size} expected")
        digest = early.take(Path(path), opened) if early is not None else None
        return (digest if digest is not None else sha256_of(handle)), opened


def copy_hashed(source: Path | int, out: int | None = None,
                limit: int | None = None) -> tuple[str, int]:
    """sha256 and size of the regular file ``source`` (a path: opened without following a
    link; a descriptor: read from where it stands, left open), its bytes also written to the
    file descriptor ``out`` when given: one read serves both, so the bytes hashed are the
    bytes written. A signal stops it between two chunks (``export`` hashes and copies in
    the main thread). ``limit``: read at most ``limit + 1`` bytes (a file that holds or grows to
    more is told by a size past ``limit``, and never fills the disk).

    With ``out``, each chunk is written by a second thread while this one hashes it, and the
    next chunk is read into the other of two buffers meanwhile: hashlib and os.write both
    release the GIL, so the copy costs about the hash alone on two cores (bench/ fleet)."""
    owned = not isinstance(source, int)
    fd = open_regular(source) if not isinstance(source, int) else source
    digest, size = hashlib.sha256(), 0
    buffers = [bytearray(CHUNK_BYTES), bytearray(CHUNK_BYTES)]
    writer = ThreadPoolExecutor(1, thread_name_prefix="copy") if out is not None else None
    pending: Future[None] | None = None
    turn = 0
    try:
        # Read into one buffer while the other is still being written.
        while n := os.readv(fd, [_room(buffers[turn], limit, size)]):
            checkpoint()
            view = memoryview(buffers[turn])[:n]
            if pending is not None:
                pending.result()
            if writer is not None and out is not None:
                pending = writer.submit(_write_all, out, view)
            digest.update(view)
            size += n
            turn ^= 1
        if pending is not None:
            pending.result()
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
        if owned:
            os.close(fd)
    return digest.hexdigest(), size


def _room(buffer: bytearray, limit: int | None, size: int) -> memoryview | bytearray:
    """``buffer``, or as much of it as ``limit + 1`` bytes in all leave (nothing once they were
    read: the copy stops there)."""
    if limit is None or limit + 1 - size >= len(buffer):
        return buffer
    return memoryview(buffer)[:max(limit + 1 - size, 0)]


def _write_all(out: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(out, view[done:])
