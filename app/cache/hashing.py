"""sha256 of files and bytes (the one digest helper of the package), the sidecars that note an
artifact's digest, and the early hashing of last run's engines (docs/cache.md, the hint).
Fleet candidates are not hashed early: a file someone else can rewrite says nothing about the
bytes read later, so promotion hashes what it copies, as it copies it."""

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

#: Chunk of the Python 3.10 loop: hashlib releases the GIL for most of it; memory stays flat.
CHUNK_BYTES = 4 * 1024 * 1024
_file_digest = getattr(hashlib, "file_digest", None)  # Python >= 3.11
_MAX_ENGINES = 16
_MAX_HINT_BYTES = 64 << 10
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_SIDECAR_MAX = 256

Identity = tuple[int, int, int, int, int]


def sha256_bytes(data: bytes | bytearray | memoryview | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def oci_digest(raw: bytes | bytearray | memoryview) -> str:
    return "sha256:" + sha256_bytes(raw)


def sha256_fd(fd: int, chunk: int) -> str:
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    with memoryview(buf) as view:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_of(handle: BinaryIO) -> str:
    if _file_digest is not None:
        # 256 KiB reads, GIL released: measured (bench/) 3-4% faster than larger chunks, and a
        # third less CPU in early-hashing threads (the chunk stays in L2 between read and hash).
        return str(_file_digest(handle, "sha256").hexdigest())
    return sha256_fd(handle.fileno(), CHUNK_BYTES)


def hash_file(path: Path, early: EarlyDigests | None = None, *, follow_links: bool = False) -> str:
    """Of a regular file (UnsafeFileError for anything else), or its digest from ``early``."""
    with open_binary(path, follow_links=follow_links) as handle:
        digest = early.take(Path(path), os.fstat(handle.fileno())) if early is not None else None
        return digest if digest is not None else sha256_of(handle)


def copy_hashed(source: Path | int, out: int | None = None,
                limit: int | None = None) -> tuple[str, int]:
    """sha256 and size of the regular file ``source`` (a descriptor is left open), its bytes
    also written to ``out``: the bytes hashed are the bytes written. ``limit``: at most
    ``limit + 1`` bytes are read. A second thread writes each chunk while this one hashes it:
    the copy costs about the hash alone on two cores (bench/ fleet)."""
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
    """``<artifact>.sha256``: 64 lowercase hex digits, published after the artifact."""

    @staticmethod
    def write_atomic_and_sidecar(path: Path, payload: bytes | bytearray | memoryview) -> str:
        path = Path(path)
        digest = sha256_bytes(payload)
        atomic_write_bytes(path, payload)
        Sha256Sidecar.write(path, digest)
        return digest

    @staticmethod
    def write(path: Path, digest: str) -> None:
        atomic_write_bytes(sidecar_path(Path(path)), digest.encode("ascii"))

    @staticmethod
    def read(path: Path) -> str | None:
        """The digest noted for ``path``; None if the sidecar is missing or malformed."""
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
    """Engines hashed in daemon threads (never joined) since :func:`start`; each digest is
    handed over once, by :meth:`take`, only for the very file the caller opened."""

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
        """The digest of ``path`` if hashed early from the file ``opened`` describes; waits."""
        with self._guard:
            done = self._jobs.pop(str(path), None)
        if done is None:
            return None
        done.wait()
        identity, digest = self._found.get(str(path), (None, None))
        return digest if identity == identity_of(opened) else None


def read_hint(cache_root: Path) -> list[str]:
    try:
        doc = parse_json(read_small(cache_root / HINT_NAME, _MAX_HINT_BYTES))
    except (OSError, ValueError):
        return []
    names = doc.get("engines") if isinstance(doc, dict) else None
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and "\0" not in n
            and not n.startswith(".")][:_MAX_ENGINES]


def write_hint(cache_root: Path, names: list[str]) -> bool:
    if read_hint(cache_root) == names[:_MAX_ENGINES]:
        return False
    atomic_write_bytes(cache_root / HINT_NAME, json.dumps({"engines": names}).encode())
    return True


def start(cache_root: Path) -> EarlyDigests:
    return EarlyDigests([cache_root / name for name in read_hint(cache_root)])
