"""The one reader of small files that someone else may have planted: sidecars, provenance
records, the lock holder, the early-hashing hint, the readiness marker, TensorRT's caches.

Whatever stands under such a name must neither hang the job nor make it read elsewhere:

- ``O_NOFOLLOW``: a symlink (to ``/dev/zero``, to someone's file) is refused, not followed;
- ``O_NONBLOCK``: opening a FIFO returns at once instead of waiting for a writer that never
  comes (regular files ignore the flag); a socket fails to open (ENXIO);
- ``fstat`` on the open descriptor: only a regular file is read, so a folder, a FIFO or a device
  is refused whatever was swapped in between a check by name and the open;
- at most ``limit`` bytes: a huge or sparse file (8 GiB of holes) is refused by its size
  before anything is read, and one that grows while read by the ``limit + 1``-th byte.

Every refusal is an :class:`UnsafeFileError` (an ``OSError``) whose message says what stands
there; absence stays ``FileNotFoundError``. Callers turn either into "damaged" or "absent".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["READ_FLAGS", "UnsafeFileError", "describe_mode", "read_small"]

#: How every file we only read is opened (the engines too, by app.cache.hashing.hash_file).
READ_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))


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


def read_small(path: Path, limit: int, *, follow_links: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` if it holds at most ``limit`` of them.

    Raises FileNotFoundError when nothing is there, UnsafeFileError for anything else than
    such a file, and OSError for an I/O error. ``follow_links`` is for files the user names
    (the config: Kubernetes mounts a ConfigMap through links), never for the cache's own.
    """
    flags = READ_FLAGS & ~getattr(os, "O_NOFOLLOW", 0) if follow_links else READ_FLAGS
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(errno.ELOOP, "a symbolic link stands there (not followed)",
                                  str(path)) from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFileError(errno.ENXIO, "a socket or a device stands there",
                                  str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(errno.EINVAL, f"{describe_mode(st.st_mode)} stands there, "
                                  "not a regular file", str(path))
        if st.st_size > limit:
            raise UnsafeFileError(errno.EFBIG, f"{st.st_size} bytes, more than the {limit} "
                                  "expected", str(path))
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, limit + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise UnsafeFileError(errno.EFBIG, f"grew past the {limit} bytes expected", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)
