"""Least privilege, as the image's non-root user (uid 10001): a cache volume owned by another
uid works with the documented group access, and fails clearly without it."""

from __future__ import annotations

import os

import pytest

from tests.container.images import HARDENED, run

pytestmark = pytest.mark.docker
CACHE_OWNER, SHARED_GID = 4242, 4242


def test_cache_owned_by_another_uid_with_group_access(client, image, robot):
    cache = robot / "cache"
    os.chown(cache, CACHE_OWNER, SHARED_GID)
    cache.chmod(0o2770)  # owner and group rwx; setgid keeps new files in the group
    code, logs = run(client, image, ["run"], robot, group_add=[str(SHARED_GID)], **HARDENED)
    assert code == 0, logs
    files = [p for p in cache.iterdir() if p.is_file()]
    assert files and {p.stat().st_gid for p in files} == {SHARED_GID}
    code, logs = run(client, image, ["run"], robot, group_add=[str(SHARED_GID)], **HARDENED)
    assert code == 0 and "0 built, 3 reused" in logs


def test_cache_without_access_is_73_naming_the_uid(client, image, robot):
    cache = robot / "cache"
    os.chown(cache, CACHE_OWNER, SHARED_GID)
    cache.chmod(0o2770)
    code, logs = run(client, image, ["run"], robot, **HARDENED)
    assert code == 73 and "uid 10001" in logs and "Traceback" not in logs


def test_unwritable_marker_folder_is_73(client, image, robot):
    os.chown(robot / "run", 0, 0)
    (robot / "run").chmod(0o755)
    code, logs = run(client, image, ["run"], robot, **HARDENED)
    assert code == 73 and "readiness_marker" in logs
