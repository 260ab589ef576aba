"""The one reader of files that someone else may have planted: the cache's sidecars, records,
lock holder, hint, marker, TensorRT caches and the engines hashed, the config, key files,
bundles, the governor's procfs and sysfs files.

Whatever stands under such a name must neither hang the job nor make it read elsewhere:

- ``O_NOFOLLOW``: a symlink (to ``/dev/zero``, to someone's file) is refused, not followed;
  ``follow_links`` (files a user names: Kubernetes mounts ConfigMaps and secrets through links,
  ``/etc/nvpmodel.conf`` is one) follows them, but only to a regular file: what a link names is
  looked at before it is opened (opening a device can act: a watchdog starts);
- ``O_NONBLOCK``: opening a FIFO returns at once instead of waiting for a writer that never
  comes (regular files ignore the flag); a socket fails to open (ENXIO);
- ``fstat`` on the open descriptor: only a regular file is read, so a folder, a FIFO or a device
  is refused whatever was swapped in between a check by name and the open;
- at most ``limit`` bytes: a huge or sparse file (8 GiB of holes) is refused by its size
  before anything is read, and one that grows while read by the ``limit + 1``-th byte;
  ``truncate`` reads the first ``limit`` bytes instead (procfs and sysfs files, whose sizes say
  nothing: 0 or 4096).

Every refusal is an :class:`UnsafeFileError` (an ``OSError``) whose message says what stands
there; absence stays ``FileNotFoundError``. Callers turn either into "damaged" or "absent".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["UnsafeFileError", "describe_mode", "open_regular", "read_small"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: How every file we only read is opened.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20
_REFUSED = {errno.ELOOP: "a symbolic link stands there (not followed)",
            errno.ENXIO: "a socket or a device stands there",
            errno.ENOTDIR: "not a folder where one is needed (links are not followed)"}


class UnsafeFileError(OSError):
    """Something other than a small regular file stands at a path the job reads."""


def describe_mode(mode: int) -> str:
    """'a FIFO', 'a folder'...: what a non-regular file is, for messages."""
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return what
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _check(mode: int, folder: bool, path: Path | str) -> None:
    if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
        raise UnsafeFileError(errno.EINVAL, f"{describe_mode(mode)} stands there, not a "
                              f"{'folder' if folder else 'regular file'}", str(path))


def open_regular(path: Path | str, *, follow_links: bool = False, dir_fd: int | None = None,
                 folder: bool = False) -> int:
    """A descriptor on the regular file (with ``folder``: the folder) at ``path``, relative to
    ``dir_fd`` when given. Raises FileNotFoundError when nothing is there, UnsafeFileError for
    anything else than such a file."""
    flags = (_READ_FLAGS & ~_NOFOLLOW if follow_links else _READ_FLAGS) | (os.O_DIRECTORY if folder else 0)
    try:
        if follow_links:  # what a link names is looked at first: opening a device can act
            _check(os.stat(path, dir_fd=dir_fd).st_mode, folder, path)
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise UnsafeFileError(exc.errno, _REFUSED[exc.errno], str(path)) from None
        raise
    try:
        _check(os.fstat(fd).st_mode, folder, path)
    except UnsafeFileError:
        os.close(fd)
        raise
    return fd


def read_small(path: Path | str, limit: int, *, follow_links: bool = False,
               dir_fd: int | None = None, truncate: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` if it holds at most ``limit`` of them (with
    ``truncate``: its first ``limit`` bytes). Raises as :func:`open_regular`, UnsafeFileError
    for a larger file, and OSError for an I/O error."""
    fd = open_regular(path, follow_links=follow_links, dir_fd=dir_fd)
    try:
        size = os.fstat(fd).st_size
        if size > limit and not truncate:
            raise UnsafeFileError(errno.EFBIG, f"{size} bytes, more than the {limit} expected",
                                  str(path))
        want = limit if truncate else limit + 1
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = os.read(fd, min(_CHUNK, want - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise UnsafeFileError(errno.EFBIG, f"grew past the {limit} bytes expected", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)
