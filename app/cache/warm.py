"""Start hashing last boot's engines while the program is still loading.

A warm boot's time is the sha256 of its engines plus the program's own start-up (interpreter,
click, YAML, pydantic-core, the job's modules, the host probe). Those need not wait for each
other: before the CLI loads, :func:`start` reads the names of the engines the previous run
used from ``<cache_root>/.engine-init.warm.json`` and hashes each in a thread. When the compiler
later verifies an engine, :func:`take` hands over the digest, but only for the very file it
opened: same device, inode, size, mtime and ctime, unchanged from before the hash to after it
(engines are only ever replaced by rename, which gives a new inode).

Everything here is advisory: a missing, stale or hostile hint costs at most the hashing of
regular files inside the cache root, and every decision is still made by :mod:`app.cache.reuse`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

from app.cache.fsread import READ_FLAGS, read_small
from app.cache.sidecar import sha256_fd

__all__ = ["HINT_NAME", "read_hint", "start", "take", "write_hint"]

HINT_NAME = ".engine-init.warm.json"
_MAX_ENGINES = 16
_MAX_HINT_BYTES = 64 << 10
# 2 MiB reads: between two reads a thread needs the GIL, which the importing main thread holds
# for up to the switch interval. Measured on 3 x 200 MB engines, 2 cores (bench/): 1 MiB reads
# 1.35x the reference, 2-4 MiB 1.15-1.24x (the spread of runs); each running thread holds one
# buffer, so 2 MiB keeps the memory low. hashlib's own loop reads 256 KiB at a time.
_CHUNK = 2 << 20
# While hashing overlaps the imports, the main thread yields the GIL every 0.5 ms instead of
# every 5 ms, so that a hashing thread between two reads does not wait long for it.
_SWITCH_S = 0.0005

Identity = tuple[int, int, int, int, int]


def identity_of(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Hash:
    """One engine hashed in a daemon thread (never joined: a run that ends early just exits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = threading.Event()
        self.identity: Identity | None = None
        self.digest: str | None = None

    def run(self) -> None:
        try:
            self._hash()
        except OSError:
            pass  # the verifier hashes the file itself and reports what it finds
        finally:
            self.done.set()
            _finished()

    def _hash(self) -> None:
        fd = os.open(self.path, READ_FLAGS)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return
            digest = sha256_fd(fd, _CHUNK)
            if identity_of(os.fstat(fd)) == identity_of(before):
                self.identity, self.digest = identity_of(before), digest
        finally:
            os.close(fd)


_STARTED: dict[str, _Hash] = {}
_GUARD = threading.Lock()
_RUNNING: list[int] = [0]
_SAVED_SWITCH: list[float] = []


def _finished() -> None:
    with _GUARD:
        _RUNNING[0] -= 1
        if _RUNNING[0] == 0 and _SAVED_SWITCH:
            sys.setswitchinterval(_SAVED_SWITCH.pop())


def read_hint(cache_root: Path) -> list[str]:
    """The engine file names the last run used; [] when there is no usable hint."""
    try:
        doc = json.loads(read_small(cache_root / HINT_NAME, _MAX_HINT_BYTES))
    except (OSError, ValueError, RecursionError):
        return []
    names = doc.get("engines") if isinstance(doc, dict) else None
    if not isinstance(names, list):
        return []
    # Plain names of files directly in the cache root, nothing else.
    return [n for n in names if isinstance(n, str) and n and "/" not in n and "\0" not in n
            and not n.startswith(".")][:_MAX_ENGINES]


def write_hint(cache_root: Path, names: list[str]) -> bool:
    """Record this run's engines for the next boot, when they changed; True if written."""
    if read_hint(cache_root) == names[:_MAX_ENGINES]:
        return False
    from app.cache.publish import atomic_write_bytes

    atomic_write_bytes(cache_root / HINT_NAME, json.dumps({"engines": names}).encode())
    return True


def start(cache_root: Path) -> int:
    """Start hashing the hinted engines; returns how many. Call once, before the CLI loads."""
    names = read_hint(cache_root)
    if not names:
        return 0
    with _GUARD:
        _SAVED_SWITCH.append(sys.getswitchinterval())
        sys.setswitchinterval(_SWITCH_S)
        for name in names:
            job = _Hash(cache_root / name)
            _STARTED[str(job.path)] = job
            _RUNNING[0] += 1
            threading.Thread(target=job.run, name=f"warm-{len(_STARTED)}", daemon=True).start()
    return len(names)


def take(path: Path, opened: os.stat_result) -> str | None:
    """The digest of ``path`` if :func:`start` hashed this very file (``opened`` is the
    caller's ``fstat`` of it); waits for that hash to finish. None: hash it yourself."""
    if not _STARTED:
        return None
    with _GUARD:
        job = _STARTED.pop(str(path), None)
    if job is None:
        return None
    job.done.wait()
    return job.digest if job.identity == identity_of(opened) else None
