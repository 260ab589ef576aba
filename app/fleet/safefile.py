"""Open files that someone else may have planted: regular files only, never blocking.

A bundle and a key file come from outside. A FIFO in their place must not hang the job (the
open is non-blocking, then anything but a regular file is refused), a link inside a layout must
not lead out of it (O_NOFOLLOW on the last component; the folders are opened one by one), and
a huge file must not be read whole (callers give a limit).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["NotRegularFileError", "open_regular", "read_limited"]

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegularFileError(OSError):
    """The path is a FIFO, a device, a socket, a folder or (without ``follow``) a link."""


def open_regular(path: Path | str, *, follow: bool = False, dir_fd: int | None = None,
                 directory: bool = False) -> int:
    """An fd on ``path`` if it is a regular file (a folder with ``directory``)."""
    flags = _FLAGS | (0 if follow else os.O_NOFOLLOW) | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (directory and exc.errno == errno.ENOTDIR):
            raise NotRegularFileError(exc.errno, "a link or not a folder", str(path)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        os.close(fd)
        raise NotRegularFileError(0, "not a regular file", str(path))
    if not directory:  # reads must block normally once we know it is a plain file
        os.set_blocking(fd, True)
    return fd


def read_limited(path: Path | str, limit: int, *, follow: bool = False,
                 dir_fd: int | None = None) -> bytes:
    """The whole file; ValueError when it holds more than ``limit`` bytes."""
    fd = open_regular(path, follow=follow, dir_fd=dir_fd)
    try:
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)
