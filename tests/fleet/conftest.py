"""Fixtures of the fleet tests: keys and a real registry (tests/fleet/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.helpers import Keys, Registry, make_keys, serve_registry


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
