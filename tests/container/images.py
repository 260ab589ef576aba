"""Images for the container tests, made without any registry.

The base is a minimal Debian with Python made by debootstrap and ``docker import``-ed, tagged by
a hash of its recipe so that it is built once per machine. It stands in for NVIDIA's Jetson bases
and reproduces their traps, so that the Dockerfile is tested against them:

- no ``python3-venv`` (no ensurepip): ``python3 -m venv`` fails, as on the NVIDIA bases; pip is
  there (``python3-pip``), as it is there;
- a stand-in of TensorRT's Python bindings installed system-wide (``nvidia_base/``: a ``tensorrt``
  package with its version line and dist-info) whose import loads a driver library that is an
  empty placeholder: ``import tensorrt`` fails during ``docker build`` and works at ``docker run``
  once a real library is mounted over the placeholder, as the NVIDIA runtime does;
- a ``video`` group (gid 44, as on L4T) for the GPU device nodes.

Python packages reach the image through a local wheelhouse (``docker/wheels``), since builds have
no network, resolved from the CI constraints file by ``tools/check_constraints.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASE_REPO = "engine-init-ci-base"
APP_TAG = "engine-init:ci"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = "python3,python3-pip,ca-certificates"
RECIPE = f"debootstrap --variant=minbase --include={PACKAGES} {SUITE} {MIRROR}"
#: The stand-in of the NVIDIA base's TensorRT bindings, copied into the base's dist-packages.
FAKE_TENSORRT = Path(__file__).resolve().parent / "nvidia_base"
DIST_PACKAGES = "usr/lib/python3/dist-packages"
MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
#: The placeholder the NVIDIA runtime would replace with the host's library at `docker run`.
PLACEHOLDER = f"/usr/lib/{MULTIARCH}/tegra/libnvdla_compiler.so"
CONSTRAINTS_DIR = REPO / "docker" / "constraints"
CONSTRAINTS = CONSTRAINTS_DIR / "ci-debian-bookworm.txt"
BUILD_ARGS = {"CONSTRAINTS": CONSTRAINTS.stem, "EXTRAS": "onnxruntime,fleet", "PIP_NO_INDEX": "1"}


def docker_client() -> tuple[Any, str]:
    """(client, "") when a Docker engine answers, else (None, why not)."""
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
        return client, ""
    except Exception as exc:  # no SDK, no socket, no permission
        return None, f"no Docker engine reachable: {type(exc).__name__}: {str(exc)[:120]}"


def _fake_files() -> list[Path]:
    return sorted(p for p in FAKE_TENSORRT.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def base_tag() -> str:
    recipe = hashlib.sha256(RECIPE.encode())
    for path in _fake_files():
        recipe.update(str(path.relative_to(FAKE_TENSORRT)).encode() + b"\0" + path.read_bytes())
    return f"{BASE_REPO}:{recipe.hexdigest()[:12]}"


def _plant_nvidia_traps(root: Path) -> None:
    """The Jetson bases' TensorRT bindings (stand-in) and their placeholder driver library."""
    for path in _fake_files():
        target = root / DIST_PACKAGES / path.relative_to(FAKE_TENSORRT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    placeholder = root / PLACEHOLDER.lstrip("/")
    placeholder.parent.mkdir(parents=True, exist_ok=True)
    placeholder.write_bytes(b"")
    if list(root.glob("usr/lib/python3*/ensurepip")):
        raise RuntimeError("the base has ensurepip: the NVIDIA bases do not (python3-venv crept in)")


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
            _plant_nvidia_traps(Path(root))
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, check=True,
                           stdout=subprocess.DEVNULL)
            tar.wait()
    client.images.get(tag).tag(BASE_REPO, "latest")
    return tag


def ensure_wheelhouse() -> Path:
    """Download the CI image's pinned wheels (and what pip needs to build the job) once."""
    wheels = REPO / "docker" / "wheels"
    stamp = wheels / f".stamp-{hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return wheels
    for old in [*wheels.glob("*.whl"), *wheels.glob(".stamp-*")]:
        old.unlink()
    subprocess.run([sys.executable, str(REPO / "tools" / "check_constraints.py"), "--dest", str(wheels),
                    str(CONSTRAINTS)], check=True, env=dict(os.environ))
    stamp.touch()
    return wheels


def build_app_image(client: Any, base: str, tag: str = APP_TAG, **build_args: str) -> str:
    """Build the Dockerfile on ``base`` with the CI build arguments (TensorRT required, as by
    default); ``docker.errors.BuildError`` carries the log when it fails."""
    ensure_wheelhouse()
    client.images.build(path=str(REPO), tag=tag, rm=True, forcerm=True,
                        buildargs={**BUILD_ARGS, "BASE_IMAGE": base, **build_args})
    return tag


if __name__ == "__main__":
    docker_api, why = docker_client()
    if docker_api is None:
        sys.exit(why)
    print(build_app_image(docker_api, ensure_base_image(docker_api)))


# -- shared by the container tests ------------------------------------------------------------
HARDENED: dict[str, Any] = dict(read_only=True, network_mode="none", cap_drop=["ALL"],
                                security_opt=["no-new-privileges:true"], tmpfs={"/tmp": ""})


def volumes(root: Path) -> dict[str, dict[str, str]]:
    return {str(root / "models"): {"bind": "/models", "mode": "ro"},
            str(root / "cache"): {"bind": "/var/cache/engine-init", "mode": "rw"},
            str(root / "run"): {"bind": "/run/engine-init", "mode": "rw"}}


def run(client, image, args, root=None, env=None, **kw) -> tuple[int, str]:
    mounts = {**(volumes(root) if root else {}), **kw.pop("volumes", {})}
    container = client.containers.run(
        image, args, detach=True, volumes=mounts,
        environment={"ENGINE_INIT_CONFIG": "/models/engine-init.yaml", **(env or {})}, **kw)
    try:
        code = container.wait(timeout=300)["StatusCode"]
        return code, container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)


def load_tool(path: Path) -> Any:
    """A script of the repository (tools/, docker/) as a module, without running its main."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
