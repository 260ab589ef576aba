"""Fault injection for the attack tests, driven by ``ENGINE_INIT_FAULTS``; inert when unset.

The variable holds comma-separated ``key=value`` items:

- ``kill_at=<point>:<glob>[#n]``: SIGKILL this process at a publish point (``before_rename``,
  ``after_rename``, or ``candidate_chunk``: after each chunk of a bundle file written into the
  candidates) the n-th (default first) time a file whose name matches the glob reaches it, as a
  power cut would.
- ``enospc_after=<bytes>``: writes to the cache fail with ENOSPC after that many bytes, as on a
  full disk.
- ``slow_build_s=<seconds>``: each backend build waits that long first (cancellable), so that
  signals can be sent while a build is in flight.

Production never sets it; the cost when unset is one dictionary lookup per published file.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import signal
from pathlib import Path
from typing import BinaryIO

_written = [0]
_matches = [0]


@functools.cache
def _settings() -> dict[str, str]:
    raw = os.environ.get("ENGINE_INIT_FAULTS", "")
    items = (item.partition("=") for item in raw.split(",") if item.strip())
    return {key.strip(): value.strip() for key, _, value in items}


def point(name: str, path: Path) -> None:
    """A publish step boundary: kill here if the attack asks for it."""
    spec = _settings().get("kill_at")
    if not spec:
        return
    where, _, pattern = spec.partition(":")
    pattern, _, nth = pattern.partition("#")
    if where == name and fnmatch.fnmatch(path.name, pattern or "*"):
        _matches[0] += 1
        if _matches[0] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def write_with_faults(handle: BinaryIO, view: memoryview, path: Path) -> None:
    """Write ``view`` to ``handle``, failing with ENOSPC where the attack asks for it."""
    limit = _settings().get("enospc_after")
    if limit is None:
        handle.write(view)
        return
    room = int(limit) - _written[0]
    if room < view.nbytes:
        handle.write(view[: max(room, 0)])
        _written[0] += max(room, 0)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    handle.write(view)
    _written[0] += view.nbytes


def slow_build_seconds() -> float:
    return float(_settings().get("slow_build_s", "0") or 0)
