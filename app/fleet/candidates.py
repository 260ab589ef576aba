"""The candidates folder (docs/fleet.md#the-trust-model): ``<sku>/`` (index.json, manifest.json,
identity.json, files/), written whole by pull and import under ``.<sku>.lock``, read by ``run`` as
untrusted input: :func:`trust_folder` says whether it is still what the fleet signed or released."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app import cancel as faults
from app import events
from app.cache.fsread import UnsafeFileError, open_regular, read_small
from app.cache.hashing import oci_digest
from app.cache.lock import wait_flock
from app.cache.names import TUF_FOLDER
from app.cache.publish import fsync_dir, is_temp_name, os_error_to_cache_error, temp_name
from app.errors import BundleError, CacheWriteError, EngineInitError, LockTimeoutError
from app.fleet import layout

_DOCS = ("index.json", "manifest.json", "identity.json")
_LOG = logging.getLogger("engine_init")


def open_candidate(root: Path, sku: str, name: str) -> int:
    """A descriptor of the regular file ``<root>/<sku>/files/<name>``, each component opened
    relative to the one before with ``O_NOFOLLOW`` (a link, FIFO or device: UnsafeFileError)."""
    parts = [root.name, sku, "files", *layout.check_name(name).split("/")]
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


def store_file(stage: Path, name: str, descriptor: layout.Descriptor, chunks: Iterable[bytes]) -> None:
    """Store ``chunks`` as ``files/<name>`` of the folder being filled; BundleError unless they are
    exactly the bytes ``descriptor`` names (read no further than one chunk past them)."""
    path = stage / "files" / layout.check_name(name)
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
                          hint=layout.ALTERED)


def store_document(path: Path, raw: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
        os.fsync(handle.fileno())


def lock_root(root: Path, name: str, timeout_s: float) -> int:
    """Create the candidates root (a fresh robot has none; a link is refused), then take
    ``name``'s flock there within ``timeout_s``: the descriptor to close."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if root.is_symlink():
            raise UnsafeFileError(errno.ELOOP, "a link", str(root))
    except OSError as exc:
        raise os_error_to_cache_error(exc, root) from None
    path = root / f".{name}.lock"

    def waiting(waited_s: float) -> None:
        events.emit(_LOG, logging.INFO, events.LOCK_WAIT, f"waiting for another import "
                    f"or pull of {name}", waited_s=round(waited_s, 3), sku=name)

    def timed_out() -> LockTimeoutError:
        return LockTimeoutError(f"another import or pull of {name} held the lock {path} for "
                                f"{timeout_s:g} s",
                                hint="let it finish, then try again (or raise lock_timeout_s)")

    try:
        return wait_flock(lambda: os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                                          | getattr(os, "O_CLOEXEC", 0), 0o644),
                          timeout_s, waiting=waiting, timed_out=timed_out, first_log_s=5.0)
    except OSError as exc:
        if isinstance(exc, EngineInitError):  # the lock's timeout (75), not the volume's fault
            raise
        raise os_error_to_cache_error(exc, root) from None


@contextmanager
def staging(root: Path, name: str, manifest_digest: str | None, *, timeout_s: float = 600.0,
            replace_any: bool = False) -> Iterator[Path | None]:
    """Lock ``name`` (a SKU, or the TUF metadata) under ``root``, sweep what a killed holder left,
    then yield a new folder that replaces ``root/name`` on a clean exit (``replace_any``: even a
    link), or None when the folder already holds the manifest ``manifest_digest``."""
    lock = lock_root(root, name, timeout_s)
    try:
        for entry in os.scandir(root):  # only under the lock: nobody else writes them
            if is_temp_name(entry.name, name, ("tmp", "old")) and entry.is_dir(
                    follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
        current = root / name
        try:
            stored = oci_digest(read_small(current / "manifest.json", layout.DOC_MAX))
        except OSError:
            stored = None
        if manifest_digest is not None and stored == manifest_digest and all(
                (current / doc).is_file() for doc in _DOCS):
            yield None
            return
        stage = temp_name(root / name)
        try:
            stage.mkdir()
            yield stage
            for parent, _, _ in os.walk(stage):  # every new folder, so that a power cut keeps them
                fsync_dir(Path(parent))
            old = temp_name(current, "old")
            if os.path.lexists(current):
                if not replace_any and (current.is_symlink() or not current.is_dir()):
                    raise CacheWriteError(f"{current} is not a folder engine-init wrote",
                                          hint="remove it; candidates are stored there")
                os.rename(current, old)
            os.rename(stage, current)
            fsync_dir(root)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.lexists(old):
                old.unlink()
        except OSError as exc:
            if isinstance(exc, EngineInitError):  # a registry that broke off (69) stays so
                raise
            raise os_error_to_cache_error(exc, stage) from None
        finally:
            if stage.is_dir() and not stage.is_symlink():
                shutil.rmtree(stage, ignore_errors=True)
    finally:
        os.close(lock)  # closing drops the flock


@dataclass(frozen=True)
class Trust:
    """The files the verified manifest lists, or (``reason``) why the folder is refused."""

    files: dict[str, layout.Descriptor] = field(default_factory=dict)
    reason: str = ""


# A verdict is kept per folder and process (``run`` is one process) under the stat facts of the
# key file, ``index.json``, ``manifest.json`` and the metadata (ctime included, which no one can
# set back), so that a folder replaced or edited during the run is checked again.
_CHECKED: dict[tuple[object, ...], Trust] = {}


def _stamp(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def trust_folder(folder: Path, sku: str, public_key_file: Path | None,
                 trusted_root: Path | None = None, repository: str | None = None) -> Trust:
    """The verdict on the candidate folder of ``sku``: its signature, or its TUF release, verified
    (docs/fleet.md#the-trust-model, docs/fleet-trust.md#the-model); never trusted by default."""
    if public_key_file is None and trusted_root is None:
        return Trust(reason="fleet.public_key_file is not set (nor fleet.trusted_root_file), so "
                            "its signature cannot be checked")
    anchors = [p for p in (public_key_file, trusted_root) if p is not None]
    metadata: list[Path] = []
    if trusted_root is not None:
        from app.fleet.bundle import require_tuf

        try:
            require_tuf()
        except EngineInitError as exc:
            return Trust(reason=f"{exc} ({exc.hint})")
        from app.fleet.tuf_verify import STORED

        metadata = [folder.parent / TUF_FOLDER / f"{r}.json" for r in STORED]
    try:
        key = (str(folder), sku, repository, *(_stamp(p) for p in (
            *anchors, folder / "index.json", folder / "manifest.json")),
            *(_stamp(p) if os.path.lexists(p) else () for p in metadata))
    except OSError as exc:
        return Trust(reason=f"{exc.filename}: {exc.strerror or exc}")
    if key not in _CHECKED:
        _CHECKED[key] = _check(folder, sku, public_key_file, trusted_root, repository)
    return _CHECKED[key]


def _check(folder: Path, sku: str, public_key_file: Path | None, trusted_root: Path | None,
           repository: str | None) -> Trust:
    from app.fleet.bundle import load_public_key, refusal

    files: dict[str, layout.Descriptor] = {}
    try:
        raw_index = read_small(folder / "index.json", layout.DOC_MAX)
        if trusted_root is not None:
            from app.fleet.tuf_verify import check_files, check_index, release_of, verified_targets

            released = release_of(verified_targets(folder.parent, trusted_root, repository, sku), sku)
            if released is None:
                raise BundleError(f"the fleet's metadata releases nothing for {sku}", hint="the "
                                  "operator releases it with `engine-init fleet trust release`")
            check_index(raw_index, released[0], str(folder))
            files = released[1]
        signed = layout.parse_signed_index(raw_index)
        why = refusal(load_public_key(public_key_file), signed) if public_key_file else ""
        if why:
            return Trust(reason=why)
        raw = read_small(folder / "manifest.json", layout.DOC_MAX)
        if not signed.manifest.matches(raw):
            return Trust(reason="manifest.json is not the manifest its signature covers")
        manifest = layout.parse_manifest(raw)
        if trusted_root is not None:
            check_files(manifest, files)
    except EngineInitError as exc:  # a bad key file, an unsigned or malformed document
        # Under TUF the fix matters (pull again, or a release to make): the hint goes along.
        return Trust(reason=str(exc) + (f" ({exc.hint})" if trusted_root and exc.hint else ""))
    except (OSError, ValueError) as exc:
        return Trust(reason=f"unreadable: {exc}")
    if manifest.sku != sku or signed.sku != sku:
        return Trust(reason=f"its manifest is for SKU {manifest.sku}, not {sku}")
    return Trust(dict(manifest.files))


def signed_bytes(folder: Path, name: str, trust: Trust) -> bytes:
    """``files/<name>`` of ``folder``, read once; ValueError unless ``trust`` lists these bytes."""
    described = trust.files.get(name)
    if described is None:
        raise ValueError(f"the signed manifest does not list {name}")
    payload = read_small(folder / "files" / name, described.size)
    if not described.matches(payload):
        raise ValueError(f"{name} is not the file the signed manifest lists")
    return payload
