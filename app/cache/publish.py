"""The only way files enter the cache: same-directory temp file (``.<name>.tmp-<pid>-<random>``,
swept under the lock), fsync, rename, fsync the folder: the old file or the whole new one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from app import cancel as faults
from app.cancel import CANCEL, cancelled_error
from app.errors import CacheIOError, CacheWriteError, DiskFullError


def is_temp_name(name: str, of: str | None = None, tags: tuple[str, ...] = ("tmp",)) -> bool:
    """Whether ``name`` is one :func:`temp_name` made (of ``of``'s name, when given)."""
    stem = ".+" if of is None else re.escape(of)
    return re.fullmatch(rf"\.{stem}\.(?:{'|'.join(tags)})-\d+-[0-9a-f]{{8}}", name) is not None


def temp_name(path: Path, tag: str = "tmp") -> Path:
    """Beside ``path``, unpredictable: nobody can plant a link or a FIFO there beforehand."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{os.urandom(4).hex()}")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_to_cache_error(exc: OSError, path: Path, needed: int | None = None) -> CacheWriteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path.parent)
        need = f"{needed} bytes needed" if needed is not None else "more space needed"
        return DiskFullError(
            f"no space left writing {path} ({need}, {free} bytes free)",
            hint=f"free at least {needed or 'some'} bytes on the cache volume, or run `engine-init prune`",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheWriteError(
            f"cannot write {path}: {exc.strerror}",
            hint="make the folder writable by the job's user (see docs/deploy.md, Permissions)",
        )
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENAMETOOLONG):
        return CacheWriteError(f"cannot use {path}: {exc.strerror}",
                               hint="point cache_root / readiness_marker at a real folder")
    return CacheIOError(f"I/O error writing {path}: {exc.strerror or exc}", hint="check the volume")


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


@contextmanager
def atomic_writer(path: Path, *, size_hint: int | None = None, mode: int = 0o644,
                  after_cancel: bool = False, outside: bool = False) -> Iterator[BinaryIO]:
    """A file to write (``O_EXCL``); on clean exit it replaces ``path`` durably, else it
    vanishes. ``after_cancel``: even after a signal (the metrics textfile); ``outside``:
    outside the cache, where no missing folder is created."""
    if CANCEL.is_set() and not after_cancel:
        raise cancelled_error()
    tmp = temp_name(path)
    try:
        if not outside:
            path.parent.mkdir(parents=True, exist_ok=True)  # cache subfolders (timing/, calibration/)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        raise os_error_to_cache_error(exc, path, size_hint) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise os_error_to_cache_error(exc, path, size_hint) from exc
        faults.point("before_rename", path)
        if CANCEL.is_set() and not after_cancel:  # nor publishes one after the signal
            raise cancelled_error()
        try:
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            raise os_error_to_cache_error(exc, path, size_hint) from exc
        faults.point("after_rename", path)
    finally:
        with contextlib.suppress(OSError):  # renamed, or swept by the next run holding the lock
            os.unlink(tmp)


def atomic_write_bytes(path: Path, payload: bytes | bytearray | memoryview, mode: int = 0o644,
                       *, after_cancel: bool = False, outside: bool = False) -> None:
    view = memoryview(payload).cast("B")
    with atomic_writer(path, size_hint=view.nbytes, mode=mode, after_cancel=after_cancel,
                       outside=outside) as handle:
        faults.write_with_faults(handle, view, path)


def sweep_temp_files(folder: Path) -> list[Path]:
    """Remove leftover temp files; call only while holding the cache lock."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed
