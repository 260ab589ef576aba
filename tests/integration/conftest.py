"""Fixtures of the attack tests: a job folder. Helpers (real CLI processes, invariants) are in
tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_job_config


@pytest.fixture
def job(tmp_path: Path, corpus: dict[str, Path]) -> Path:
    return write_job_config(tmp_path, corpus)
