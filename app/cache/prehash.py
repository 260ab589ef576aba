"""Early hashing: start hashing last run's engines as soon as the config is valid.

A warm boot's time is the sha256 of its engines plus the program's own work (the job's modules,
the host probe: cuda-python's import and the driver take ~0.3 s on a GPU). Those need not wait
for each other: right after the config validates, ``run`` calls :func:`start`, which reads the
names of the engines the previous run used from ``<cache_root>/.engine-init.warm.json`` and
hashes each in a thread. The :class:`PrehashResults` it returns is handed to the compiler, and
from there to the verifier, which takes a digest only for the very file it opened: same device,
inode, size, mtime and ctime, unchanged from before the hash to after it (engines are only
ever replaced by rename, which gives a new inode). Fleet candidates are not hashed here: a
digest taken from a file someone else can rewrite says nothing about the bytes read later,
so promotion (:mod:`app.fleet.promote`) hashes what it copies, as it copies it.

Everything here is advisory: a missing, stale or hostile hint costs at most the hashing of
regular files inside the cache root, and every decision is still made by :mod:`app.cache.reuse`.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from app.cache.fsread import open_regular, parse_json, read_small
from app.cache.hashing import sha256_of
from app.cache.layout import HINT_NAME

_MAX_ENGINES = 16
_MAX_HINT_BYTES = 64 << 10

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

    def _hash(self) -> None:
        # The verifier's own reads (256 KiB): between two of them a thread needs the GIL, so
        # while the main thread runs Python code the hashing slows down, and it runs at full
        # speed while the main thread waits (file and driver calls, the verifier's wait).
        with os.fdopen(open_regular(self.path), "rb", buffering=0) as handle:
            before = os.fstat(handle.fileno())
            digest = sha256_of(handle)
            if identity_of(os.fstat(handle.fileno())) == identity_of(before):
                self.identity, self.digest = identity_of(before), digest


class PrehashResults:
    """The engines :func:`start` is hashing; each digest is handed over once, by :meth:`take`
    (an :class:`app.cache.hashing.EarlyDigests`)."""

    def __init__(self, jobs: list[_Hash] | None = None) -> None:
        self._jobs = {str(job.path): job for job in jobs or []}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def take(self, path: Path, opened: os.stat_result) -> str | None:
        """The digest of ``path`` if it was hashed early and ``opened`` (the caller's
        ``fstat``) is that very file; waits for that hash to finish. None: hash it yourself."""
        with self._guard:
            job = self._jobs.pop(str(path), None)
        if job is None:
            return None
        job.done.wait()
        return job.digest if job.identity == identity_of(opened) else None


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
    """Record this run's engines for the next boot, when they changed; True if written."""
    if read_hint(cache_root) == names[:_MAX_ENGINES]:
        return False
    from app.cache.publish import atomic_write_bytes

    atomic_write_bytes(cache_root / HINT_NAME, json.dumps({"engines": names}).encode())
    return True


def start(cache_root: Path) -> PrehashResults:
    """Start hashing the engines the hint names, one thread each; returns at once."""
    jobs = [_Hash(cache_root / name) for name in read_hint(cache_root)]
    for i, job in enumerate(jobs):
        threading.Thread(target=job.run, name=f"prehash-{i}", daemon=True).start()
    return PrehashResults(jobs)
