"""sha256 of files and bytes (the one digest helper of the package), the sidecars that note an
artifact's digest, and the early hashing of last run's engines.

A warm boot's time is the sha256 of its engines plus the program's own work (the job's modules,
the host probe: cuda-python's import and the driver take ~0.3 s on a GPU). Those need not wait
for each other: right after the config validates, ``run`` calls :func:`start`, which hashes the
engines the previous run named in ``<cache_root>/.engine-init.warm.json``, each in a thread.
The verifier takes such a digest only for the very file it opened: same device, inode, size,
mtime and ctime, unchanged from before the hash to after it (engines are only ever replaced by
rename, which gives a new inode). Fleet candidates are not hashed early: a digest taken from a
file someone else can rewrite says nothing about the bytes read later, so promotion hashes what
it copies, as it copies it. A missing, stale or hostile hint costs at most the hashing of regular
files inside the cache root; every decision is still made by :mod:`app.cache.reuse`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from app.cache.fsread import open_binary, open_regular, parse_json, read_small
from app.cache.names import HINT_NAME, SIDECAR_SUFFIX, companion
from app.cache.publish import atomic_write_bytes
from app.cancel import checkpoint

#: Chunk of the Python 3.10 loop: large enough that hashlib releases the GIL for most of the
#: work, small enough to keep memory flat whatever the file size.
CHUNK_BYTES = 4 * 1024 * 1024
_file_digest = getattr(hashlib, "file_digest", None)  # Python >= 3.11
_MAX_ENGINES = 16
_MAX_HINT_BYTES = 64 << 10
_HEX64 = re.compile(rb"[0-9a-f]{64}")
# A sidecar is 64 hex digits, maybe a newline; anything much larger is not ours.
_SIDECAR_MAX = 256

Identity = tuple[int, int, int, int, int]


def sha256_bytes(data: bytes | bytearray | memoryview | str) -> str:
    """A string is hashed as its UTF-8 bytes."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def oci_digest(raw: bytes | bytearray | memoryview) -> str:
    """``sha256:<hex>``, as OCI descriptors name blobs."""
    return "sha256:" + sha256_bytes(raw)


def sha256_fd(fd: int, chunk: int) -> str:
    """Of what is left to read from ``fd``, through one buffer of ``chunk`` bytes."""
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    with memoryview(buf) as view:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_of(handle: BinaryIO) -> str:
    """Of what is left to read from an unbuffered binary file."""
    if _file_digest is not None:
        # Python >= 3.11: 256 KiB reads and the GIL released while hashing. Measured (bench/)
        # 3-4% faster than a Python loop over larger chunks, and in early-hashing threads that
        # overlap the main thread's work, a third less CPU than 4 MiB reads: the chunk stays in
        # the core's L2 cache between the read and the hash.
        return str(_file_digest(handle, "sha256").hexdigest())
    return sha256_fd(handle.fileno(), CHUNK_BYTES)


def hash_file(path: Path, early: EarlyDigests | None = None, *, follow_links: bool = False) -> str:
    """Of a regular file (UnsafeFileError for anything else), or its digest from ``early``;
    ``follow_links``: a file the user names, which may be a link to a regular file."""
    with open_binary(path, follow_links=follow_links) as handle:
        digest = early.take(Path(path), os.fstat(handle.fileno())) if early is not None else None
        return digest if digest is not None else sha256_of(handle)


def copy_hashed(source: Path | int, out: int | None = None,
                limit: int | None = None) -> tuple[str, int]:
    """sha256 and size of the regular file ``source`` (a path: opened without following a
    link; a descriptor: read from where it stands, left open), its bytes also written to
    ``out`` when given: one read serves both, so the bytes hashed are the bytes written. A
    signal stops it between two chunks. ``limit``: read at most ``limit + 1`` bytes (a file
    that holds or grows to more is told by a size past ``limit``, and never fills the disk).

    With ``out``, each chunk is written by a second thread while this one hashes it and the
    next is read into the other buffer: hashlib and os.write both release the GIL, so the copy
    costs about the hash alone on two cores (bench/ fleet)."""
    owned = not isinstance(source, int)
    fd = source if isinstance(source, int) else open_regular(source)
    digest, size = hashlib.sha256(), 0
    buffers = [bytearray(CHUNK_BYTES), bytearray(CHUNK_BYTES)]
    writer = ThreadPoolExecutor(1, thread_name_prefix="copy") if out is not None else None
    pending: Future[None] | None = None
    turn = 0
    try:
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
    """``buffer``, or as much of it as ``limit + 1`` bytes in all leave (none once read: the
    copy stops there)."""
    if limit is None or limit + 1 - size >= len(buffer):
        return buffer
    return memoryview(buffer)[:max(limit + 1 - size, 0)]


def _write_all(out: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(out, view[done:])


def sidecar_path(path: Path) -> Path:
    return companion(path, SIDECAR_SUFFIX)


class Sha256Sidecar:
    """``<artifact>.sha256`` holds the 64 lowercase hex digits of the artifact's sha256. The
    artifact is published first, the sidecar second; a kill between the two leaves an artifact
    whose sidecar is absent or stale, which :meth:`verify` rejects."""

    @staticmethod
    def write_atomic_and_sidecar(path: Path, payload: bytes | bytearray | memoryview) -> str:
        """Publish ``payload`` at ``path``, then its sidecar; return the hex digest."""
        path = Path(path)
        digest = sha256_bytes(payload)
        atomic_write_bytes(path, payload)
        Sha256Sidecar.write(path, digest)
        return digest

    @staticmethod
    def write(path: Path, digest: str) -> None:
        """Publish the sidecar of ``path``, already published."""
        atomic_write_bytes(sidecar_path(Path(path)), digest.encode("ascii"))

    @staticmethod
    def read(path: Path) -> str | None:
        """The digest noted for ``path``; None if the sidecar is missing, malformed, or not a
        small regular file (a FIFO or a link planted there is not waited on, not followed)."""
        try:
            text = read_small(sidecar_path(Path(path)), _SIDECAR_MAX).strip()
        except OSError:
            return None
        return text.decode("ascii") if _HEX64.fullmatch(text) else None

    @staticmethod
    def verify(path: Path) -> bool:
        """True when ``path`` is a regular file whose sha256 matches its sidecar; never raises."""
        return Sha256Sidecar.verified_digest(path) is not None

    @staticmethod
    def verified_digest(path: Path, early: EarlyDigests | None = None) -> str | None:
        """The digest of ``path`` if it matches its sidecar, else None."""
        try:
            expected = Sha256Sidecar.read(path)
            if expected is None:
                return None
            actual = hash_file(Path(path), early)
        except (OSError, ValueError):
            return None
        return actual if actual == expected else None


def identity_of(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class EarlyDigests:
    """Engines hashed in daemon threads (never joined: a run that ends early just exits) since
    :func:`start`; each digest is handed over once, by :meth:`take`."""

    def __init__(self, paths: Sequence[Path] = ()) -> None:
        self._jobs = {str(path): threading.Event() for path in paths}
        self._found: dict[str, tuple[Identity, str]] = {}
        self._guard = threading.Lock()
        for i, path in enumerate(paths):
            threading.Thread(target=self._hash, args=(path, self._jobs[str(path)]),
                             name=f"prehash-{i}", daemon=True).start()

    def __len__(self) -> int:
        return len(self._jobs)

    def _hash(self, path: Path, done: threading.Event) -> None:
        # The verifier's own reads (256 KiB): between two of them a thread needs the GIL, so
        # while the main thread runs Python code the hashing slows down, and it runs at full
        # speed while the main thread waits (file and driver calls, the verifier's wait).
        try:
            with open_binary(path) as handle:
                before = identity_of(os.fstat(handle.fileno()))
                digest = sha256_of(handle)
                if identity_of(os.fstat(handle.fileno())) == before:
                    self._found[str(path)] = (before, digest)
        except OSError:
            pass  # the verifier hashes the file itself and reports what it finds
        finally:
            done.set()

    def take(self, path: Path, opened: os.stat_result) -> str | None:
        """The digest of ``path`` if it was hashed early and ``opened`` (the caller's ``fstat``)
        is that very file; waits for that hash to finish. None: hash it yourself."""
        with self._guard:
            done = self._jobs.pop(str(path), None)
        if done is None:
            return None
        done.wait()
        identity, digest = self._found.get(str(path), (None, None))
        return digest if identity == identity_of(opened) else None


def read_hint(cache_root: Path) -> list[str]:
    """The engine file names the last run used; [] when there is no usable hint."""
    try:
        doc = parse_json(read_small(cache_root / HINT_NAME, _MAX_HINT_BYTES))
    except (OSError, ValueError):
        return []
    names = doc.get("engines") if isinstance(doc, dict) else None
    if not isinstance(names, list):
        return []
    # Plain names of files directly in the cache root, nothing else.
    return [n for n in names if isinstance(n, str) and n and "/" not in n and "\0" not in n
            and not n.startswith(".")][:_MAX_ENGINES]


def write_hint(cache_root: Path, names: list[str]) -> bool:
    """Name this run's engines for the next boot, when they changed; True if written."""
    if read_hint(cache_root) == names[:_MAX_ENGINES]:
        return False
    atomic_write_bytes(cache_root / HINT_NAME, json.dumps({"engines": names}).encode())
    return True


def start(cache_root: Path) -> EarlyDigests:
    """Start hashing the engines the hint names, one thread each; returns at once."""
    return EarlyDigests([cache_root / name for name in read_hint(cache_root)])
