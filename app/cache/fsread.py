"""The one reader of files that someone else may have planted: whatever stands there must
neither hang the job nor make it read elsewhere (docs/cache.md, docs/hardening.md#documents-read-from-disk).
``O_NOFOLLOW`` (``follow_links``: only to a regular file, looked at before the open: opening a
device can act), ``O_NONBLOCK`` (a FIFO), ``fstat`` on the descriptor (a swap after a check by
name), at most ``limit`` bytes (``truncate``: procfs and sysfs). Refusals are UnsafeFileError.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20
_REFUSED = {errno.ELOOP: "a symbolic link stands there (not followed)",
            errno.ENXIO: "a socket or a device stands there",
            errno.ENOTDIR: "not a folder where one is needed (links are not followed)"}


MAX_INT_DIGITS = 20  # any size or nanosecond time fits
JSON_DEPTH = 32  # a record's settings are the deepest of the job's documents, at 5
#: A string (escapes included), or one bracket: only brackets outside strings nest.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{\]}]')


class UnsafeFileError(OSError):
    """Something else than a small regular file stands at a path the job reads."""


def describe_mode(mode: int) -> str:
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
    ``dir_fd`` when given; UnsafeFileError for anything else."""
    flags = (_READ_FLAGS & ~_NOFOLLOW if follow_links else _READ_FLAGS) | (os.O_DIRECTORY if folder else 0)
    try:
        if follow_links:
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


def open_binary(path: Path | str, *, follow_links: bool = False) -> BinaryIO:
    """:func:`open_regular` as an unbuffered binary file (``name``: the path)."""
    handle = os.fdopen(open_regular(path, follow_links=follow_links), "rb", buffering=0)
    handle.name = os.fspath(path)  # for messages and onnx's external data
    return handle


def read_small(path: Path | str, limit: int, *, follow_links: bool = False,
               dir_fd: int | None = None, truncate: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` if at most ``limit`` (``truncate``: its first
    ``limit``), refused by its size before it is read or by the ``limit + 1``-th byte."""
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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number the job writes")


def parse_json(raw: bytes | str, max_depth: int = JSON_DEPTH) -> Any:
    """The JSON document in ``raw`` within docs/hardening.md's bounds; ValueError otherwise."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = 0
    # Counted before the parser recurses; not at all when there are too few brackets to nest
    # that deep (most documents: the scan costs twice the parse).
    brackets = data.count(b"[") + data.count(b"{")
    for token in _TOKENS.finditer(data) if brackets > max_depth else ():
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise ValueError(f"it is nested more than {max_depth} levels deep")
        elif bracket in (b"]", b"}"):
            depth -= 1
    try:
        return json.loads(data, parse_float=_finite, parse_int=_bounded_int,
                          parse_constant=_refuse_constant)
    except RecursionError:  # unreachable after the count above; kept as a second fence
        raise ValueError(f"it is nested more than {max_depth} levels deep") from None
