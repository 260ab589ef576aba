"""Least privilege on this machine: a world-writable cache is refused unless allowed, and a
read-only filesystem is a clear 73. (The other-uid cases run as the image's non-root user in
tests/container/test_privilege.py.)"""

from __future__ import annotations

import yaml

from tests.helpers import cli, tmpfs


def test_world_writable_cache_is_refused_unless_allowed(job):
    cache = job.parent / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    refused = cli("--config", str(job), "run")
    assert refused.returncode == 78 and "world-writable" in refused.stderr
    assert "allow_world_writable_cache" in refused.stderr  # the hint says how to accept it
    doc = yaml.safe_load(job.read_text())
    doc["allow_world_writable_cache"] = True
    job.write_text(yaml.safe_dump(doc))
    assert cli("--config", str(job), "run").returncode == 0


def test_read_only_filesystem_is_73(job, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k,mode=755") as ro:
        doc = yaml.safe_load(job.read_text())
        doc["cache_root"] = str(ro)
        job.write_text(yaml.safe_dump(doc))
        result = cli("--config", str(job), "run")
        assert result.returncode == 73 and str(ro) in result.stderr
        assert "Traceback" not in result.stderr
