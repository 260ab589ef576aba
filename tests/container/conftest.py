"""Fixtures of the container tests: the Docker client, the CI image, a robot's folders."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.container.images import build_app_image, docker_client, ensure_base_image

UID = 10001


def _unavailable(why: str) -> None:
    """Skip with the reason, or fail where CI requires the container tests."""
    if os.environ.get("REQUIRE_DOCKER_TESTS") == "1":
        pytest.fail(f"REQUIRE_DOCKER_TESTS=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def client():
    docker_api, why = docker_client()
    if docker_api is None:
        _unavailable(why)
    return docker_api


@pytest.fixture(scope="session")
def base(client) -> str:
    """The CI base: Debian with the Jetson bases' traps (see tests/container/images.py)."""
    try:
        return ensure_base_image(client)
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        # e.g. no debootstrap, or not root: the base image cannot be made on this machine.
        _unavailable(f"cannot make the base image: {exc}")
        raise


@pytest.fixture(scope="session")
def image(client, base) -> str:
    return build_app_image(client, base)


@pytest.fixture
def robot(tmp_path, corpus):
    """Host folders as on a robot: models (read-only in the container), cache, the fleet's
    candidates (read-only in the boot job), run; plus a config for the generated models,
    placed beside them."""
    root = tmp_path / "robot"
    models = root / "models"
    shutil.copytree(corpus["dinov2_vpr"].parent, models)
    shutil.copytree(corpus["calibration"], models / "calibration")
    config = {
        "cache_root": "/var/cache/engine-init", "readiness_marker": "/run/engine-init/ready.json",
        "backend": "onnxruntime", "precision": "fp32", "calibration_path": "/models/calibration",
        "backbones": [
            {"model_name": "dinov2_vpr", "onnx_path": "/models/dinov2_vpr.onnx",
             "expected_input_shape": [1, 3, 32, 32]},
            {"model_name": "lightglue", "onnx_path": "/models/lightglue.onnx", "input_shapes": {
                "desc0": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]},
                "desc1": {"min": [1, 1, 64], "opt": [1, 8, 64], "max": [1, 64, 64]}}},
            {"model_name": "aliked", "onnx_path": "/models/aliked.onnx",
             "expected_input_shape": [1, 3, 64, 64], "precision": "int8"},
        ],
    }
    (models / "engine-init.yaml").write_text(yaml.safe_dump(config))
    for name in ("cache", "candidates", "run"):
        (root / name).mkdir()
        os.chown(root / name, UID, UID)
    return root


