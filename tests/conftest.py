"""Shared fixtures: a generated ONNX corpus, event capture, and a stand-in runtime."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import (
    BackboneSpec,
    BuildConfig,
    EngineCacheEntry,
    EngineCompileRequest,
    HostCapabilities,
    PrecisionMode,
    Sha256Sidecar,
)
from app.demo import build_corpus

ORIN = HostCapabilities(87, "6.2", "10.3")


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


def make_request(specs: tuple[BackboneSpec, ...], cache: Path, host: HostCapabilities = ORIN,
                 precision: PrecisionMode = PrecisionMode.FP16, **kw: Any) -> EngineCompileRequest:
    return EngineCompileRequest(backbones=specs, calibration_path=kw.pop("calibration_path", None),
                                cache_root=cache, precision=precision, host=host, **kw)


class EventLog(logging.Handler):
    """Collects the structured events a logger receives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, kind: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "kind", None) == kind]

    def kv(self, kind: str) -> list[dict[str, Any]]:
        return [r.kv for r in self.of(kind)]  # type: ignore[attr-defined]


@pytest.fixture
def events() -> Iterator[tuple[logging.Logger, EventLog]]:
    logger = logging.getLogger(f"test.{id(object())}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    log = EventLog()
    logger.addHandler(log)
    yield logger, log
    logger.removeHandler(log)


class FakeRuntime:
    """Stand-in runtime (no real compile): publishes sha256(ONNX bytes + precision) as the
    'engine' through Sha256Sidecar at ``build_config.engine_path``, and records its calls.
    Only ``compile_engine`` exists, as for the plainest third-party runtime."""

    def __init__(self, fail_on: str | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[Path, BuildConfig]] = []
        self.fail_on, self.error = fail_on, error

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        self.calls.append((model_path, build_config))
        if self.fail_on == build_config.model_name and self.error is not None:
            raise self.error
        assert build_config.engine_path is not None
        payload = hashlib.sha256(Path(model_path).read_bytes()).digest() * 64
        payload += build_config.precision.value.encode()
        digest = Sha256Sidecar.write_atomic_and_sidecar(build_config.engine_path, payload)
        return EngineCacheEntry(build_config.engine_path, digest, 87, "6.2", "10.3",
                                build_config.precision, {})

    @property
    def built(self) -> list[str]:
        return [cfg.model_name for _, cfg in self.calls]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (for "left untouched" assertions)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh interpreter; events are JSON lines on stderr."""
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=kw.pop("cwd", REPO), **kw)


def json_events(stderr: str) -> list[dict[str, Any]]:
    import json

    out = []
    for line in stderr.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "kind" in doc:
            out.append(doc)
    return out


def write_job_config(root: Path, corpus: dict[str, Path], **overrides: Any) -> Path:
    """A config for the demo corpus with cache and marker under ``root``."""
    import yaml

    (root / "run").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "cache_root": str(root / "cache"),
        "readiness_marker": str(root / "run" / "ready.json"),
        "backend": "onnxruntime",
        "precision": "fp32",
        "calibration_path": str(corpus["calibration"]),
        "lock_timeout_s": 60,
        "backbones": [
            {"model_name": "dinov2_vpr", "onnx_path": str(corpus["dinov2_vpr"]),
             "expected_input_shape": [1, 3, 32, 32]},
            {"model_name": "lightglue", "onnx_path": str(corpus["lightglue"]),
             "input_shapes": {"desc0": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]},
                              "desc1": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]}}},
            {"model_name": "aliked", "onnx_path": str(corpus["aliked"]),
             "expected_input_shape": [1, 3, 64, 64], "precision": "int8"},
        ],
    }
    doc.update(overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
