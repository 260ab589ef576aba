"""Atomic publishing: all or nothing, temp files removed, errors translated."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from app.cache.publish import (
    atomic_write_bytes,
    atomic_writer,
    is_temp_name,
    sweep_temp_files,
)
from app.errors import CacheWriteError, DiskFullError


def test_replaces_atomically_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.engine"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"new" * 1000
    assert os.listdir(tmp_path) == ["f.engine"]


def test_failure_inside_the_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.engine"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.engine"]


def test_read_only_folder_is_a_cache_write_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits; covered by the read-only mount test")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CacheWriteError):
            atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        tmp_path.chmod(0o700)


def test_enospc_becomes_disk_full_with_sizes(tmp_path):
    env = dict(os.environ, ENGINE_INIT_FAULTS="enospc_after=10")
    code = ("from pathlib import Path; from app.cache.publish import atomic_write_bytes\n"
            "from app.errors import DiskFullError\n"
            f"try:\n    atomic_write_bytes(Path({str(tmp_path / 'f')!r}), b'x' * 5000)\n"
            "except DiskFullError as e:\n    print(e)\n")
    out = subprocess.check_output([sys.executable, "-c", code], env=env, text=True)
    assert "no space left" in out and "5000 bytes needed" in out
    assert os.listdir(tmp_path) == []
    assert issubclass(DiskFullError, OSError)
    assert errno.ENOSPC


def test_temp_names_are_recognised_and_swept(tmp_path):
    stale = tmp_path / ".m.engine.tmp-123-0a1b2c3d"
    stale.write_bytes(b"half")
    keep = tmp_path / "m.engine"
    keep.write_bytes(b"whole")
    assert is_temp_name(stale.name) and not is_temp_name(keep.name)
    assert sweep_temp_files(tmp_path) == [stale]
    assert os.listdir(tmp_path) == ["m.engine"]
