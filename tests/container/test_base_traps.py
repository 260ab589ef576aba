"""The NVIDIA bases' traps, as the CI base reproduces them, and the image's answer to each.

The CI base (tests/container/images.py) stands in for NVIDIA's Jetson bases: no ensurepip, and a
stand-in of the TensorRT Python bindings installed system-wide (not TensorRT: a package whose
import loads a driver library that is an empty placeholder until a real one is mounted over it,
as the NVIDIA runtime does at ``docker run``). The image is built on it with the default
``REQUIRE_TENSORRT=1``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

import docker
from tests.container.images import BUILD_ARGS, HARDENED, MULTIARCH, PLACEHOLDER, build_app_image, run

pytestmark = pytest.mark.docker
PYTHON = "/opt/engine-init/bin/python"
IMPORT = "import tensorrt; print('tensorrt', tensorrt.__version__, 'from', tensorrt.__file__)"


def _build(client, dockerfile: str, tag: str) -> str:
    """Build a one-off image from ``dockerfile``; its log (raises BuildError with the log)."""
    _, log = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    return "".join(chunk.get("stream", "") for chunk in log)


@pytest.fixture(scope="module")
def driver_library(client, base, tmp_path_factory):
    """A real shared library on the host, standing for the host's driver library that the NVIDIA
    runtime mounts over the placeholder (the stand-in only loads it). Taken from the base, so it
    fits the base's C library."""
    real = client.containers.run(base, ["readlink", "-f", f"/usr/lib/{MULTIARCH}/libz.so.1"],
                                 remove=True).decode().strip()
    container = client.containers.create(base, ["true"])
    try:  # an archive, not the container's output: the log driver would mangle binary data
        chunks, _ = container.get_archive(real)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(Path(real).name)
            assert member is not None
            data = member.read()
    finally:
        container.remove(force=True)
    assert data[:4] == b"\x7fELF"
    path = tmp_path_factory.mktemp("host") / "libnvdla_compiler.so"
    path.write_bytes(data)
    return path


def test_base_has_no_ensurepip_so_a_plain_venv_fails(client, base):
    container = client.containers.run(base, ["python3", "-m", "venv", "/tmp/venv"], detach=True)
    try:
        code = container.wait(timeout=120)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert code != 0 and "ensurepip is not" in logs


def test_import_tensorrt_fails_during_docker_build(client, base):
    """What the old build-time check did: it cannot pass on this base, nor on a Jetson base."""
    with pytest.raises(docker.errors.BuildError) as failed:
        _build(client, f'FROM {base}\nRUN python3 -c "import tensorrt"\n', "engine-init-ci-trap:import")
    log = "".join(chunk.get("stream", "") + chunk.get("error", "") for chunk in failed.value.build_log)
    assert "libnvdla_compiler.so: file too short" in log


def test_image_was_built_requiring_tensorrt(client, image):
    """The image fixture builds with the Dockerfile's default REQUIRE_TENSORRT=1: the build-time
    check found the stand-in's bindings without importing them."""
    assert "REQUIRE_TENSORRT" not in BUILD_ARGS
    steps = [layer["CreatedBy"] for layer in client.images.get(image).history()]
    checks = [step for step in steps if "check_base.py" in step]
    assert len(checks) == 2 and all("REQUIRE_TENSORRT=1" in step for step in checks)


def test_build_without_bindings_stops_at_the_check(client, base):
    """The same build on the base minus the bindings fails at once, naming the way out."""
    bare = "engine-init-ci-trap:no-tensorrt"
    _build(client, f"FROM {base}\nRUN rm -r /usr/lib/python3/dist-packages/tensorrt*\n", bare)
    with pytest.raises(docker.errors.BuildError) as failed:
        build_app_image(client, bare, tag="engine-init-ci-trap:image")
    log = "".join(chunk.get("stream", "") + chunk.get("error", "") for chunk in failed.value.build_log)
    assert "TensorRT's Python bindings are not installed" in log and "REQUIRE_TENSORRT=0" in log
    assert "pip install" not in log  # stopped before installing anything


def test_build_with_constraints_for_another_base_stops_naming_the_right_one(client, base):
    with pytest.raises(docker.errors.BuildError) as failed:
        build_app_image(client, base, tag="engine-init-ci-trap:image", CONSTRAINTS="l4t-tensorrt-r10.3.0")
    log = "".join(chunk.get("stream", "") + chunk.get("error", "") for chunk in failed.value.build_log)
    assert "is for Python 3.10 on aarch64" in log and "CONSTRAINTS=ci-debian-bookworm" in log


def test_tensorrt_import_at_run_time_needs_the_mounted_driver_library(client, image, driver_library):
    """Without the mount (runc, or a build) the import fails in the loader; with the host's library
    mounted over the placeholder, as the NVIDIA runtime does, it works."""
    code, logs = run(client, image, ["-c", IMPORT], entrypoint=[PYTHON], **HARDENED)
    assert code == 1 and "ImportError" in logs and "libnvdla_compiler.so: file too short" in logs
    mount = {str(driver_library): {"bind": PLACEHOLDER, "mode": "ro"}}
    code, logs = run(client, image, ["-c", IMPORT], entrypoint=[PYTHON], volumes=mount, **HARDENED)
    assert code == 0, logs
    assert "tensorrt 10.3.0 from /usr/lib/python3/dist-packages/tensorrt/__init__.py" in logs


def test_job_reads_the_tensorrt_version_without_importing_it(client, image, robot):
    """The host probe finds the bindings in the same container where importing them fails."""
    code, logs = run(client, image, ["status"], robot, {"ENGINE_INIT_LOG_FORMAT": "json"}, **HARDENED)
    assert code == 0, logs
    probed = [json.loads(line) for line in logs.splitlines() if '"c10.host.probed"' in line]
    assert probed and probed[0]["kv"]["trt"] == "10.3.0"


def test_job_asked_for_tensorrt_without_a_gpu_is_69_without_a_traceback(client, image, robot):
    """On this machine (no GPU, no NVIDIA runtime) the job stops at the GPU probe, before
    importing TensorRT: exit 69 with a one-line reason."""
    code, logs = run(client, image, ["run"], robot, {"ENGINE_INIT_BACKEND": "tensorrt"}, **HARDENED)
    assert code == 69 and "engine-init: error:" in logs and "Traceback" not in logs
    assert not (robot / "run" / "ready.json").exists()


def test_run_user_is_in_the_video_group(client, image):
    """The GPU nodes are root:video 0660 on a Jetson: the image's user is in video, and compose's
    group_add: [video] (docker run --group-add video) resolves to the same gid."""
    for extra in ({}, {"group_add": ["video"]}):
        code, logs = run(client, image, [], entrypoint=["id"], **HARDENED, **extra)
        assert code == 0 and logs.startswith("uid=10001(engine-init)"), logs
        assert "44(video)" in logs.split("groups=")[1], logs
