"""compose.yaml's fleet-pull service as compose itself reads it (`docker-compose config`, no
engine, no network): a profile of its own, `engine-init pull` with a network, the candidates
folder (not the cache), the config, the public key and the Docker config folder mounted, while
the boot job stays offline and reads the candidates read-only.
That `up` leaves it alone is checked by tests/container/test_image.py's compose run."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

KEY = "/etc/engine-init/fleet.pub.pem"
#: <cache_root>/candidates in the container: fleet.candidates_dir's default.
CANDIDATES = "/var/cache/engine-init/candidates"


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    raise AssertionError  # not reached


def _config(*extra: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("ENGINE_INIT_", "NV_TEGRA", "COMPOSE_"))}
    files = [arg for name in ("compose.yaml", *extra) for arg in ("-f", str(REPO / name))]
    done = subprocess.run([*_compose_command(), *files, "--profile",
                           "fleet-pull", "config"], capture_output=True, text=True,
                          env={**clean, **env}, cwd=REPO, timeout=60, check=True)
    return dict(yaml.safe_load(done.stdout)["services"])


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """container path -> (host path, read-only), from the short (v1) or long (v2) syntax."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = (volume["source"], bool(volume.get("read_only", False)))
        else:
            host, target, *mode = volume.split(":")
            out[target] = (host, mode[:1] == ["ro"])
    return out


def test_fleet_pull_runs_pull_with_a_network_and_the_fleet_files():
    services = _config()
    pull = services["fleet-pull"]
    assert pull["profiles"] == ["fleet-pull"]
    assert pull["command"] == ["pull", "--public-key", KEY]
    assert pull.get("network_mode", "default") != "none"
    assert pull["image"] == services["engine-init"]["image"]
    mounts = _mounts(pull)
    docker_config = pull["environment"]["DOCKER_CONFIG"]
    assert mounts == {
        # Candidates land here, the only folder it can write; the cache is not mounted.
        CANDIDATES: ("/var/lib/engine-init/candidates", False),
        "/models": ("/opt/robot/models", True),  # the config's onnx_path entries must exist
        "/etc/engine-init/config.yaml": ("/etc/engine-init/config.yaml", True),
        KEY: (KEY, True),
        docker_config: ("/etc/engine-init/docker", True),
        "/etc/nv_tegra_release": ("/etc/nv_tegra_release", True),
    }
    # The same protections as the boot job; only the network differs.
    for key in ("runtime", "group_add", "read_only", "cap_drop", "security_opt", "tmpfs", "restart"):
        assert pull[key] == services["engine-init"][key], key


def test_the_boot_job_stays_offline_and_outside_the_profile():
    services = _config()
    for name in ("engine-init", "navigation"):
        assert services[name]["network_mode"] == "none"
        assert "profiles" not in services[name]
    boot, pull = _mounts(services["engine-init"]), _mounts(services["fleet-pull"])
    assert "/var/cache/engine-init" not in pull  # the puller cannot write the cache
    assert boot[CANDIDATES] == (pull[CANDIDATES][0], True)  # the same folder, read-only


def test_the_host_paths_of_fleet_pull_are_variables(tmp_path):
    given = {"ENGINE_INIT_CANDIDATES_DIR": tmp_path / "cand", "ENGINE_INIT_FLEET_CONFIG": tmp_path / "c.yaml",
             "ENGINE_INIT_FLEET_PUBLIC_KEY": tmp_path / "k.pem",
             "ENGINE_INIT_DOCKER_CONFIG_DIR": tmp_path / "docker"}
    mounts = _mounts(_config(**{k: str(v) for k, v in given.items()})["fleet-pull"])
    assert mounts[CANDIDATES][0] == str(tmp_path / "cand")
    assert mounts["/etc/engine-init/config.yaml"][0] == str(tmp_path / "c.yaml")
    assert mounts[KEY][0] == str(tmp_path / "k.pem")
    assert mounts["/etc/engine-init/docker"][0] == str(tmp_path / "docker")


def test_a_fleet_robots_boot_job_sees_the_config_and_the_key_it_checks_candidates_with():
    """compose.fleet.yaml: the boot job gets fleet-pull's config and public key, read-only, and
    keeps everything else (no network, the cache, the models)."""
    services = _config("compose.fleet.yaml")
    boot, pull = _mounts(services["engine-init"]), _mounts(services["fleet-pull"])
    for target in ("/etc/engine-init/config.yaml", KEY):
        assert boot[target] == pull[target] and boot[target][1]
    assert boot["/var/cache/engine-init"] == _mounts(_config()["engine-init"])["/var/cache/engine-init"]
    assert services["engine-init"]["network_mode"] == "none"
