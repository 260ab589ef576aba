"""This robot's own record key (app.cache.signing.robot_key): made once, kept, never read through
something planted under its name."""

from __future__ import annotations

import os

import pytest

from app.cache.signing import ROBOT_KEY_NAME, robot_key
from app.errors import CacheWriteError


def test_made_once_by_run_then_read_by_everyone(tmp_path):
    cache = tmp_path / "fresh" / "cache"
    assert robot_key(cache, create=False) is None and not cache.exists()
    key = robot_key(cache, create=True)
    assert key is not None and len(key) == 32
    assert robot_key(cache, create=True) == robot_key(cache, create=False) == key
    assert (cache / ROBOT_KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(cache)) == [ROBOT_KEY_NAME]  # no temp file left


@pytest.mark.parametrize("planted", ["link", "fifo", "folder", "short"])
def test_something_planted_under_its_name_is_refused_not_read(tmp_path, planted):
    path = tmp_path / ROBOT_KEY_NAME
    target = tmp_path / "theirs"
    target.write_bytes(b"k" * 32)
    {"link": lambda: path.symlink_to(target), "fifo": lambda: os.mkfifo(path),
     "folder": path.mkdir, "short": lambda: path.write_bytes(b"k" * 8)}[planted]()
    for create in (False, True):
        with pytest.raises(CacheWriteError, match=ROBOT_KEY_NAME):
            robot_key(tmp_path, create=create)
