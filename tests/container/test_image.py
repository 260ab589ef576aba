"""The image on a real Docker engine: build, CLI as the non-root user, real runs on generated
models with mounted volumes, a read-only root filesystem, compose gating and docker stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.container.images import HARDENED, REPO, run, volumes

pytestmark = pytest.mark.docker
UID = 10001
def test_help_runs_as_the_non_root_user(client, image):
    # The uid alone, so that Docker adds the user's groups (video) from the image's /etc/group.
    assert client.images.get(image).attrs["Config"]["User"] == str(UID)
    code, logs = run(client, image, ["--help"])
    assert code == 0 and "wait-ready" in logs


def test_validate_bad_config_is_78_naming_the_field(client, image, robot):
    doc = yaml.safe_load((robot / "models" / "engine-init.yaml").read_text())
    doc["workspace_mb"] = -1
    (robot / "models" / "bad.yaml").write_text(yaml.safe_dump(doc))
    code, logs = run(client, image, ["validate"], robot, {"ENGINE_INIT_CONFIG": "/models/bad.yaml"})
    assert code == 78 and "workspace_mb" in logs and "Traceback" not in logs


def test_run_builds_then_reuses_with_files_owned_by_the_job(client, image, robot):
    code, logs = run(client, image, ["run"], robot, **HARDENED)
    assert code == 0, logs
    marker = json.loads((robot / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["built"] * 3
    files = sorted((robot / "cache").iterdir())
    assert len([f for f in files if f.suffix == ".ort"]) == 3
    assert {(f.stat().st_uid, f.stat().st_gid) for f in files} == {(UID, UID)}
    before = {f.name: f.read_bytes() for f in files if f.is_file()}
    code, logs = run(client, image, ["run"], robot, **HARDENED)
    assert code == 0, logs
    marker = json.loads((robot / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["reused"] * 3
    after = {f.name: f.read_bytes() for f in (robot / "cache").iterdir() if f.is_file()}
    assert {k: after[k] for k in before if not k.endswith(".record.json")} == \
        {k: v for k, v in before.items() if not k.endswith(".record.json")}


def test_read_only_root_and_no_network(client, image, robot):
    code, logs = run(client, image, ["run"], robot, **HARDENED)
    assert code == 0, logs
    code, logs = run(client, image, ["wait-ready", "--timeout", "1", "--verify"], robot, **HARDENED)
    assert code == 0 and "3 engine(s)" in logs


def test_docker_stop_during_a_build_exits_143_promptly(client, image, robot):
    container = client.containers.run(
        image, ["run"], detach=True, volumes=volumes(robot), **HARDENED,
        environment={"ENGINE_INIT_CONFIG": "/models/engine-init.yaml",
                     "ENGINE_INIT_FAULTS": "slow_build_s=60"})
    try:
        deadline = time.monotonic() + 60
        while b"c10.engine.compile.start" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        start = time.monotonic()
        container.stop(timeout=10)
        elapsed = time.monotonic() - start
        code = container.wait(timeout=30)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert code == 143, logs
    assert elapsed < 3, f"docker stop took {elapsed:.1f} s"
    assert not (robot / "run" / "ready.json").exists()
    assert [p.name for p in (robot / "cache").iterdir() if ".tmp-" in p.name or p.suffix == ".ort"] == []


def compose(robot: Path, project: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENGINE_INIT_IMAGE="engine-init:ci",
               ENGINE_INIT_CACHE_DIR=str(robot / "cache"), ENGINE_INIT_MODELS_DIR=str(robot / "models"),
               ENGINE_INIT_CANDIDATES_DIR=str(robot / "candidates"),
               ENGINE_INIT_RUN_DIR=str(robot / "run"), NV_TEGRA_RELEASE="/dev/null",
               ENGINE_INIT_CI_CONFIG="/models/engine-init.yaml")
    command = ["docker-compose", "-p", project, "-f", str(REPO / "compose.yaml"),
               "-f", str(REPO / "compose.ci.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _states(project: str) -> dict[str, tuple[str, int, str]]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                          "--format", "{{.Label \"com.docker.compose.service\"}}|{{.ID}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    states = {}
    for line in out:
        service, cid = line.split("|")
        info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                         check=True).stdout)[0]["State"]
        states[service] = (info["Status"], info["ExitCode"], info["StartedAt"] + "|" + info["FinishedAt"])
    return states


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_gates_navigation_on_success(image, robot):
    project = f"einit{os.getpid()}"
    try:
        up = compose(robot, project, "up", "--no-build", "--exit-code-from", "navigation")
        assert up.returncode == 0, up.stdout + up.stderr
        states = _states(project)
        assert states["engine-init"][:2] == ("exited", 0)
        assert states["navigation"][:2] == ("exited", 0)
        assert "fleet-pull" not in states  # a profile of its own: `up` leaves it alone
        init_finished = states["engine-init"][2].split("|")[1]
        nav_started = states["navigation"][2].split("|")[0]
        assert nav_started > init_finished  # ISO-8601 timestamps compare as text
        assert "3 engine(s)" in up.stdout + up.stderr
    finally:
        compose(robot, project, "down", "-v")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_failure_never_starts_navigation(image, robot):
    (robot / "models" / "aliked.onnx").unlink()
    project = f"einitfail{os.getpid()}"
    try:
        up = compose(robot, project, "up", "--no-build")
        assert up.returncode != 0
        # compose v2: 'service "engine-init" didn't complete successfully: exit 78';
        # compose v1: 'ERROR: for navigation  Container "..." exited with code 78.'
        assert re.search(r"didn't complete successfully: exit 78|exited with code 78", up.stdout + up.stderr)
        states = _states(project)
        assert states["engine-init"][:2] == ("exited", 78)
        assert states.get("navigation", ("created", 0, ""))[0] == "created"  # never started
        assert not (robot / "run" / "ready.json").exists()
    finally:
        compose(robot, project, "down", "-v")
