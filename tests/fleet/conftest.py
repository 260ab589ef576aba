"""Fixtures of the fleet tests: keys and a real registry (tests/fleet/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.helpers import Keys, Reference, Registry, make_keys, serve_registry
from tests.helpers import cli, write_job_config


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys", "fleet")


@pytest.fixture
def other_keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys", "intruder")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with serve_registry(tmp_path / "registry") as server:
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    ref = Reference(root, root / "k.pem", root / "k.pub.pem", root / "bundle.tar")
    assert cli("fleet", "keygen", str(ref.private), str(ref.public)).returncode == 0
    config = write_job_config(root, corpus)
    assert cli("--config", str(config), "run").returncode == 0
    exported = cli("--config", str(config), "export", str(ref.bundle), "--private-key", str(ref.private))
    assert exported.returncode == 0, exported.stderr
    return ref
