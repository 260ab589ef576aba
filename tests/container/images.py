"""Images for the container tests, made without any registry.

The base is a minimal Debian with Python made by debootstrap and ``docker import``-ed, tagged by
a hash of its recipe so that it is built once per machine. Python packages reach the image
through a local wheelhouse (``docker/wheels``), since builds have no network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASE_REPO = "engine-init-ci-base"
APP_TAG = "engine-init:ci"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates"
RECIPE = f"debootstrap --variant=minbase --include={PACKAGES} {SUITE} {MIRROR}"


def docker_client() -> tuple[Any, str]:
    """(client, "") when a Docker engine answers, else (None, why not)."""
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
        return client, ""
    except Exception as exc:  # no SDK, no socket, no permission
        return None, f"no Docker engine reachable: {type(exc).__name__}: {str(exc)[:120]}"


def base_tag() -> str:
    return f"{BASE_REPO}:{hashlib.sha256(RECIPE.encode()).hexdigest()[:12]}"


def ensure_base_image(client: Any) -> str:
    tag = base_tag()
    try:
        client.images.get(tag)
    except Exception as missing:
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is needed to make the base image "
                               "(apt-get install debootstrap)") from missing
        with tempfile.TemporaryDirectory(prefix="engine-init-rootfs-", dir="/var/tmp") as root:
            subprocess.run([*RECIPE.split()[:-2], SUITE, root, MIRROR], check=True,
                           stdout=subprocess.DEVNULL)
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, check=True,
                           stdout=subprocess.DEVNULL)
            tar.wait()
    client.images.get(tag).tag(BASE_REPO, "latest")
    return tag


def ensure_wheelhouse() -> Path:
    """Download the image's pinned wheels (CPython 3.11, x86_64) once."""
    wheels = REPO / "docker" / "wheels"
    constraints = REPO / "docker" / "constraints.txt"
    stamp = wheels / f".stamp-{hashlib.sha256(constraints.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return wheels
    for old in wheels.glob("*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                    "--python-version", "3.11", "--implementation", "cp",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "-c", str(constraints), "-d", str(wheels),
                    "click", "pydantic", "PyYAML", "prometheus-client", "onnx", "onnxruntime", "numpy",
                    "setuptools>=68", "wheel"], check=True, env=dict(os.environ))
    for old in wheels.glob(".stamp-*"):
        old.unlink()
    stamp.touch()
    return wheels


def build_app_image(client: Any, base: str) -> str:
    ensure_wheelhouse()
    client.images.build(path=str(REPO), tag=APP_TAG, rm=True, forcerm=True, buildargs={
        "BASE_IMAGE": base, "REQUIRE_TENSORRT": "0", "EXTRAS": "onnxruntime", "PIP_NO_INDEX": "1"})
    return APP_TAG


if __name__ == "__main__":
    docker_api, why = docker_client()
    if docker_api is None:
        sys.exit(why)
    print(build_app_image(docker_api, ensure_base_image(docker_api)))
