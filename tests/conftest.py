"""Shared fixtures: a generated ONNX corpus, event capture. Helpers are in tests/helpers.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import BackboneSpec
from tests.helpers import EventLog, write_job_config
from tools.demo import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo corpus (three real ONNX models and calibration batches), built once."""
    root = tmp_path_factory.mktemp("corpus")
    paths = build_corpus(root)
    paths["calibration"] = root / "calibration"
    return paths


@pytest.fixture
def specs(corpus: dict[str, Path]) -> tuple[BackboneSpec, ...]:
    return (
        BackboneSpec("dinov2_vpr", corpus["dinov2_vpr"], (1, 3, 32, 32)),
        BackboneSpec("lightglue", corpus["lightglue"], None),
        BackboneSpec("aliked", corpus["aliked"], (1, 3, 64, 64)),
    )


@pytest.fixture
def events() -> Iterator[tuple[logging.Logger, EventLog]]:
    logger = logging.getLogger(f"test.{id(object())}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    log = EventLog()
    logger.addHandler(log)
    yield logger, log
    logger.removeHandler(log)


@pytest.fixture
def job(tmp_path: Path, corpus: dict[str, Path]) -> Path:
    """A config for the demo corpus, with its cache and marker in the test's folder."""
    return write_job_config(tmp_path, corpus)
