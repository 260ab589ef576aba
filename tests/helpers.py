"""Helpers shared by the tests (fixtures live in conftest.py; everything else is here)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: Every kind of thing that may be planted at a path the job reads (see :func:`plant`).
PLANTED_KINDS = ("fifo", "socket", "chardev", "link-to-dev-zero", "link-to-copy", "dangling-link",
                 "folder", "folder-with-data", "huge", "sparse-8g")


def plant(path: Path, kind: str, outside: Path) -> Path | None:
    """Put a ``kind`` thing at ``path`` (replacing what was there); ``outside`` is a folder for
    link targets. Returns the file a link points to, whose bytes must stay as they are."""
    original = path.read_bytes() if path.is_file() and not path.is_symlink() else b"x"
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    target = None
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        # AF_UNIX paths are limited to ~108 bytes: bind in a short folder, then move it.
        short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(short / "s"))
            os.rename(short / "s", path)
        short.rmdir()
    elif kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "link-to-copy":
        # The very bytes that stood there: accepted only if the link were followed.
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / f"copy-of-{path.name}"
        target.write_bytes(original)
        path.symlink_to(target)
    elif kind == "dangling-link":
        path.symlink_to(outside / "nothing-here")
    elif kind == "folder":
        path.mkdir()
    elif kind == "folder-with-data":
        path.mkdir()
        (path / "someones-notes.txt").write_text("keep me")
    elif kind == "huge":
        path.write_bytes(os.urandom(8 << 20))
    elif kind == "sparse-8g":
        with open(path, "wb") as handle:
            handle.truncate(8 << 30)
    else:
        raise ValueError(kind)
    return target


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (instead of hanging it) if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def handlers_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM, i.e. engine-init's own code has started (the
    interpreter alone leaves SIGTERM at its default; Linux /proc)."""
    import signal

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((int(line.split()[1], 16) for line in status.splitlines()
                   if line.startswith("SigCgt:")), 0)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def wait_until_started(pid: int, timeout: float = 30) -> None:
    """Block until :func:`handlers_installed` says so."""
    import time

    deadline = time.monotonic() + timeout
    while not handlers_installed(pid):
        assert time.monotonic() < deadline, f"process {pid} never installed its signal handlers"
        time.sleep(0.002)
