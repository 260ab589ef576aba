"""Where verified bundle files land: candidates, never engines the cache would reuse.

::

    <candidates root>/                 fleet.candidates_dir, default <cache_root>/candidates
    ├── .<sku>.lock                    flock: one import or pull of a SKU at a time
    ├── .<sku>.tmp-<pid>-<random>/     being written (swept by the next holder of the lock)
    └── <sku>/
        ├── index.json                 the signed index, as received (``run`` re-checks it)
        ├── manifest.json              the manifest, as received
        ├── identity.json              the SKU identity the bundle was built on
        └── files/                     engines, sidecars, records, timing/, calibration/

This folder is the only one ``pull`` and ``import`` write, and ``run`` treats it as untrusted
input: whoever can write it (a compromised puller) can put anything there, so ``run`` opens
what it promotes one path component at a time without following a link
(:func:`open_candidate`) and copies the bytes it verifies (:mod:`app.fleet.promote`).

A SKU's folder appears whole or not at all: the files are written into a fresh folder, each
checked against its size and digest while written, and the folder is renamed into place only
when every file checked out. A folder already holding the same manifest is kept as it is.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app import cancel as faults
from app import events
from app.cache.fsread import UnsafeFileError, open_regular, read_small
from app.cache.hashing import oci_digest
from app.cache.lock import wait_flock
from app.cache.publish import fsync_dir, os_error_to_cache_error, temp_name
from app.errors import BundleError, CacheWriteError, EngineInitError, LockTimeoutError
from app.fleet.layout import Descriptor, check_name

_DOCS = ("index.json", "manifest.json", "identity.json")
_LOG_EVERY_S = 5.0
_LOG = logging.getLogger("engine_init")


def candidate_folder(root: Path, sku: str) -> Path:
    """``sku``'s folder under the candidates root ``root``."""
    return root / sku


def open_candidate(root: Path, sku: str, name: str) -> int:
    """A descriptor of the regular file ``<root>/<sku>/files/<name>``, reached by opening each
    component relative to the one before with ``O_NOFOLLOW`` (``root`` itself, ``<sku>``,
    ``files`` and a subfolder included): a link anywhere below the root's parent, a FIFO or a
    device is an UnsafeFileError, never followed. Only the root's parent, which the config
    names, is opened as it is."""
    parts = [root.name, sku, "files", *check_name(name).split("/")]
    fd = open_regular(root.parent, follow_links=True, folder=True)
    where = root.parent
    try:
        for part in parts[:-1]:
            where = where / part
            inner = open_regular(part, dir_fd=fd, folder=True)
            os.close(fd)
            fd = inner
        where = where / parts[-1]
        return open_regular(parts[-1], dir_fd=fd)
    except OSError as exc:  # named by its whole path, not by the component opened
        raise type(exc)(exc.errno, exc.strerror, str(where)) from None
    finally:
        os.close(fd)


class Stage:
    """A folder being filled with one bundle's files; each write checks size and digest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bytes = 0
        self._count = threading.Lock()  # files are written by several threads at once

    def write(self, name: str, descriptor: Descriptor, chunks: Iterable[bytes]) -> None:
        """Store ``chunks`` as ``files/<name>``; BundleError unless they are exactly the bytes
        ``descriptor`` names (stops reading as soon as there are too many)."""
        path = self.folder / "files" / check_name(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > descriptor.size:
                    break
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                faults.point("candidate_chunk", path)
            os.fsync(fd)
        finally:
            os.close(fd)
        if size != descriptor.size:
            raise BundleError(f"{name}: {'more' if size > descriptor.size else 'fewer'} bytes "
                              f"than the signed {descriptor.size}",
                              hint="the bundle or the registry's copy is damaged; push it again")
        if "sha256:" + digest.hexdigest() != descriptor.digest:
            raise BundleError(f"{name}: its bytes do not match the signed digest {descriptor.digest}",
                              hint="the bundle or the registry's copy was altered; push it again")
        with self._count:
            self.bytes += size

    def write_document(self, name: str, raw: bytes) -> None:
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            os.fsync(handle.fileno())


def _lock(folder: Path, sku: str, timeout_s: float) -> int:
    """The SKU's flock, waited for up to ``timeout_s`` (LockTimeoutError: exit 75); a signal
    ends the wait at the next poll (exit 143)."""
    path = folder / f".{sku}.lock"

    def waiting(waited_s: float) -> None:
        events.emit(_LOG, logging.INFO, events.LOCK_WAIT, f"waiting for another import "
                    f"or pull of {sku}", waited_s=round(waited_s, 3), sku=sku)

    def timed_out() -> LockTimeoutError:
        return LockTimeoutError(f"another import or pull of {sku} held the lock {path} for "
                                f"{timeout_s:g} s",
                                hint="let it finish, then try again (or raise lock_timeout_s)")

    return wait_flock(lambda: os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                                      | getattr(os, "O_CLOEXEC", 0), 0o644),
                      timeout_s, waiting=waiting, timed_out=timed_out, first_log_s=_LOG_EVERY_S)


def _sweep(folder: Path, sku: str) -> None:
    """Remove what a killed import left (only under the lock: nobody else writes them)."""
    for entry in os.scandir(folder):
        if entry.name.startswith((f".{sku}.tmp-", f".{sku}.old-")) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _stored_manifest(current: Path) -> str | None:
    try:
        raw = read_small(current / "manifest.json", 1 << 20)
    except OSError:
        return None
    return oci_digest(raw)


def _publish(stage: Path, current: Path) -> None:
    old: Path | None = None
    if os.path.lexists(current):
        if current.is_symlink() or not current.is_dir():
            raise CacheWriteError(f"{current} is not a folder engine-init wrote",
                                  hint="remove it; candidates are stored there")
        old = current.with_name(f".{current.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(current, old)
    os.rename(stage, current)
    fsync_dir(current.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def lock_root(root: Path, name: str, timeout_s: float) -> int:
    """Create the candidates root ``root`` with its parents (a fresh robot has none of them),
    refuse it if it is a link, then take ``name``'s lock there (the descriptor to close).
    A volume that refuses is a CacheWriteError naming ``root``; the lock's timeout stays 75."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if root.is_symlink():
            raise UnsafeFileError(errno.ELOOP, "a link", str(root))
    except OSError as exc:
        raise os_error_to_cache_error(exc, root) from None
    try:
        return _lock(root, name, timeout_s)
    except OSError as exc:
        if isinstance(exc, EngineInitError):  # the lock's timeout (75), not the volume's fault
            raise
        raise os_error_to_cache_error(exc, root) from None


@contextmanager
def staging(root: Path, sku: str, manifest_digest: str, *,
            timeout_s: float = 600.0) -> Iterator[Stage | None]:
    """Lock the SKU's candidates under the candidates root ``root`` (created with its parents
    on a fresh robot), then yield a :class:`Stage` to fill, or None when the same manifest is
    already stored. On a clean exit the stage replaces the SKU's folder."""
    folder = root
    lock = lock_root(folder, sku, timeout_s)
    try:
        _sweep(folder, sku)
        current = folder / sku
        if _stored_manifest(current) == manifest_digest and all(
                (current / name).is_file() for name in _DOCS):
            yield None
            return
        stage = temp_name(folder / sku)
        try:
            stage.mkdir()
            yield Stage(stage)
            for parent, _, _ in os.walk(stage):  # every new folder, so that a power cut keeps them
                fsync_dir(Path(parent))
            _publish(stage, current)
        except OSError as exc:
            if isinstance(exc, EngineInitError):  # a registry that broke off (69) stays so
                raise
            raise os_error_to_cache_error(exc, stage) from None
        finally:
            if stage.is_dir() and not stage.is_symlink():
                shutil.rmtree(stage, ignore_errors=True)
    finally:
        os.close(lock)  # closing drops the flock
