"""The documented ``docker run`` line, run with the Docker CLI as written there.

The command is read from docs/deploy.md ("Without compose: `docker run`"), so the test fails when
the page drifts. What changes, and only that: ``--runtime nvidia`` becomes ``--runtime runc`` (no
GPU here) and ``ENGINE_INIT_BACKEND=onnxruntime`` is added; the robot's host folders become the
test's; the image is the CI image; the container gets a unique name; ``ENGINE_INIT_CONFIG`` names
the generated models' config, and the docker stop test slows the build (``ENGINE_INIT_FAULTS``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.container.images import APP_TAG, REPO

pytestmark = pytest.mark.docker
#: docker run options the README may use, and whether each takes a value.
OPTIONS = {"--rm": False, "--read-only": False, "--name": True, "--runtime": True, "--gpus": True,
           "--group-add": True, "--tmpfs": True, "--network": True, "--cap-drop": True,
           "--security-opt": True, "-e": True, "-v": True}
ROBOT_FOLDERS = {"/var/lib/engine-init/cache": "cache",
                 "/var/lib/engine-init/candidates": "candidates", "/opt/robot/models": "models",
                 "/run/engine-init": "run"}
NV_TEGRA_RELEASE = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                    "DATE: Wed Jan  8 01:49:37 UTC 2025\n")


@dataclass
class DockerRun:
    """One ``docker run`` command line, split into its options, image and arguments."""

    options: list[tuple[str, str | None]] = field(default_factory=list)
    image: str = ""
    args: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> DockerRun:
        words = shlex.split(text.replace("\\\n", " "))
        assert words[:2] == ["docker", "run"], words[:2]
        run, rest = cls(), words[2:]
        while rest[0].startswith("-"):
            option = rest.pop(0)
            assert option in OPTIONS, f"the README uses {option}, which this test does not know"
            run.options.append((option, rest.pop(0) if OPTIONS[option] else None))
        run.image, run.args = rest[0], rest[1:]
        return run

    def values(self, option: str) -> list[str]:
        return [value or "" for name, value in self.options if name == option]

    def command(self) -> list[str]:
        flat = [part for name, value in self.options for part in (name, value) if part is not None]
        return ["docker", "run", *flat, self.image, *self.args]


def readme_blocks() -> list[str]:
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("## Without compose: `docker run`", 1)[1].split("\n#", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def jetson_line() -> DockerRun:
    return DockerRun.parse(readme_blocks()[0])


def as_tested(robot: Path, name: str, **env: str) -> list[str]:
    """The README's Jetson line with only the substitutions the module docstring lists."""
    run = jetson_line()
    release = robot / "nv_tegra_release"
    release.write_text(NV_TEGRA_RELEASE)
    hosts = {**{path: str(robot / folder) for path, folder in ROBOT_FOLDERS.items()},
             "/etc/nv_tegra_release": str(release)}
    options: list[tuple[str, str | None]] = []
    for option, value in run.options:
        if option == "--runtime":
            assert value == "nvidia"
            value = "runc"
        elif option == "--name":
            value = name
        elif option == "-v" and value:
            host, _, inside = value.partition(":")
            assert host in hosts, f"the README mounts {host}, which this test does not map"
            value = f"{hosts[host]}:{inside}"
        options.append((option, value))
    env = {"ENGINE_INIT_BACKEND": "onnxruntime", "ENGINE_INIT_CONFIG": "/models/engine-init.yaml", **env}
    options += [("-e", f"{key}={value}") for key, value in env.items()]
    return DockerRun(options, APP_TAG, run.args).command()


def _name(robot: Path) -> str:
    return f"engine-init-readme-{os.getpid()}-{robot.parent.name}"


def test_readme_line_builds_then_reuses(image, robot):
    done = subprocess.run(as_tested(robot, _name(robot)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    marker = json.loads((robot / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["built"] * 3
    assert marker["host"]["l4t"] == "36.4.3" and marker["host"]["jetpack"] == "6.2"
    assert marker["backend"] == "onnxruntime"
    done = subprocess.run(as_tested(robot, _name(robot)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    marker = json.loads((robot / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["reused"] * 3


def test_readme_line_with_a_bad_config_is_78(image, robot):
    doc = yaml.safe_load((robot / "models" / "engine-init.yaml").read_text())
    doc["precision"] = "fp8"
    (robot / "models" / "bad.yaml").write_text(yaml.safe_dump(doc))
    done = subprocess.run(as_tested(robot, _name(robot), ENGINE_INIT_CONFIG="/models/bad.yaml"),
                          capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("engine-init: error:")]
    assert done.returncode == 78 and len(errors) == 1 and "precision" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (robot / "run" / "ready.json").exists()


def test_readme_line_docker_stop_during_a_build_is_143(image, robot, tmp_path):
    name = _name(robot)
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        job = subprocess.Popen(as_tested(robot, name, ENGINE_INIT_FAULTS="slow_build_s=60"),
                               stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while "c10.engine.compile.start" not in log.read_text() and time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()
            time.sleep(0.1)
        start = time.monotonic()
        subprocess.run(["docker", "stop", name], check=True, capture_output=True, timeout=60)
        code = job.wait(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        if job.poll() is None:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            job.kill()
    assert code == 143, log.read_text()
    assert elapsed < 5, f"docker stop took {elapsed:.1f} s"
    assert not (robot / "run" / "ready.json").exists()
    assert [p.name for p in (robot / "cache").iterdir() if ".tmp-" in p.name or p.suffix == ".ort"] == []


def _compose_default(value: str) -> str:
    """``${VAR:-default}`` -> default; anything else unchanged."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_readme_line_has_the_same_protections_and_mounts_as_compose():
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["engine-init"]
    run = jetson_line()
    assert run.values("--runtime") == [service["runtime"]] == ["nvidia"]
    assert run.values("--group-add") == [_compose_default(g) for g in service["group_add"]] == ["video"]
    assert ("--read-only", None) in run.options and service["read_only"] is True
    assert run.values("--tmpfs") == service["tmpfs"] == ["/tmp"]
    assert run.values("--network") == [service["network_mode"]] == ["none"]
    assert run.values("--cap-drop") == service["cap_drop"] == ["ALL"]
    assert run.values("--security-opt") == service["security_opt"] == ["no-new-privileges:true"]
    assert run.values("-e") == [f"{k}={v}" for k, v in service["environment"].items()]
    assert run.values("-v") == [_compose_default(v) for v in service["volumes"]]
    assert run.image == _compose_default(service["image"])
    assert "--user" not in dict(run.options)  # the image's user, with its video group
    assert service["restart"] == "no"  # docker run's default: no restart policy either


def test_readme_x86_line_differs_only_in_the_gpu_and_the_l4t_release():
    jetson, x86 = (DockerRun.parse(block) for block in readme_blocks()[:2])
    expected = [("--gpus", "all") if option == ("--runtime", "nvidia") else option
                for option in jetson.options if option[1] != "/etc/nv_tegra_release:/etc/nv_tegra_release:ro"]
    assert x86.options == expected and x86.args == jetson.args


def test_image_asks_the_nvidia_runtime_for_every_gpu_compute_and_utility(client, image):
    env = dict(item.split("=", 1) for item in client.images.get(image).attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
