"""deploy/systemd: checked by systemd's own ``systemd-analyze verify``, and the ``docker run``
lines compared with compose.yaml, so that the two ways of starting the job cannot drift apart.

What is not run here: the units under a real systemd (no systemd as PID 1 on CI) and the
containers under the NVIDIA runtime (no Jetson). docs/tensorrt.md: "What was proven where"."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.settings import compose_settings, docker_run_settings, require
from tests.deploy.units import UNITS, command, environment, parse_unit

SERVICES = {"engine-init.service": "engine-init", "navigation.service": "navigation",
            "engine-init-pull.service": "fleet-pull"}
# Where Docker's own unit would be: verify resolves Requires=docker.service through them.
_SYSTEM_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    require(shutil.which("systemd-analyze") is not None,
            "systemd-analyze is not installed (Debian package systemd)")
    require(shutil.which("docker") is not None,
            "the docker CLI is not installed: verify checks that ExecStart's command exists")
    if not any(Path(d, "docker.service").exists() for d in _SYSTEM_UNIT_DIRS):
        # Stand-in for Docker's unit, which verify must find for Requires=; ours are what is checked.
        (folder / "docker.service").write_text("[Service]\nExecStart=docker version\n")
    units = [str(folder / name) for name in SERVICES]
    return subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True,
                          timeout=60)


def _about_ours(result: subprocess.CompletedProcess[str]) -> list[str]:
    """verify's complaints about our units (warnings too: an unknown key only warns)."""
    lines = (result.stdout + result.stderr).splitlines()
    return [x for x in lines if any(name in x for name in SERVICES)]


def _copy_units(tmp_path: Path) -> Path:
    for name in SERVICES:
        shutil.copy(UNITS / name, tmp_path / name)
    return tmp_path


def test_units_pass_systemd_analyze_verify(tmp_path):
    result = _verify(_copy_units(tmp_path))
    assert result.returncode == 0 and _about_ours(result) == [], result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new"), [
    ("Type=oneshot", "Type=one-shot"),                      # a bad value: only a warning
    ("RemainAfterExit=yes", "RemainAfterExits=yes"),        # an unknown key: only a warning
    ("Requires=docker.service", "Requires=dockerd.service"),  # a unit that does not exist
])
def test_verify_catches_a_broken_unit(tmp_path, old, new):
    folder = _copy_units(tmp_path)
    unit = folder / "engine-init.service"
    assert old in unit.read_text()
    unit.write_text(unit.read_text().replace(old, new))
    result = _verify(folder)
    assert result.returncode != 0 or _about_ours(result), "verify saw nothing wrong"


def _timespan_s(text: str) -> float:
    """A systemd time span, parsed by systemd itself."""
    require(shutil.which("systemd-analyze") is not None,
            "systemd-analyze is not installed (Debian package systemd)")
    out = subprocess.run(["systemd-analyze", "timespan", text], capture_output=True, text=True,
                         check=True).stdout
    (usec,) = [line.split(":", 1)[1] for line in out.splitlines() if line.strip().startswith("μs:")]
    return int(usec) / 1e6


def test_engine_init_is_a_oneshot_that_stays_active_with_a_first_boot_timeout():
    unit = parse_unit(UNITS / "engine-init.service")
    service = unit["Service"]
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    assert "docker.service" in unit["Unit"]["Requires"][0].split()
    assert "docker.service" in unit["Unit"]["After"][0].split()
    # A first boot's builds (up to an hour on a small Orin) and the lock wait fit; a hung
    # build still ends (no "infinity").
    assert 60 * 60 <= _timespan_s(service["TimeoutStartSec"][0]) <= 3 * 60 * 60


def test_only_the_puller_has_a_network_and_it_cannot_write_the_cache():
    """The boundary (docs/fleet.md): the network-facing pull writes the candidates folder
    only; the boot job reads that folder read-only and is the only writer of the cache."""
    mounts = {}
    for name in ("engine-init.service", "engine-init-pull.service"):
        service = parse_unit(UNITS / name)["Service"]
        settings, _ = docker_run_settings(command(service["ExecStart"][0], environment(service))[1])
        mounts[name] = {target: (host, mode) for host, target, mode in settings["volumes"]}
        assert (settings["network"] == "none") is (name == "engine-init.service")
    boot, pull = mounts["engine-init.service"], mounts["engine-init-pull.service"]
    candidates = "/var/cache/engine-init/candidates"
    assert "/var/cache/engine-init" not in pull and pull[candidates][1] == "rw"
    assert boot[candidates] == (pull[candidates][0], "ro")
    assert [mode for target, (_, mode) in pull.items() if target != candidates] == ["ro"] * (len(pull) - 1)


def test_navigation_requires_and_follows_engine_init():
    unit = parse_unit(UNITS / "navigation.service")["Unit"]
    assert "engine-init.service" in " ".join(unit["Requires"]).split()
    assert "engine-init.service" in " ".join(unit["After"]).split()


@pytest.mark.parametrize("unit_name", SERVICES)
def test_docker_run_matches_compose(unit_name):
    service = parse_unit(UNITS / unit_name)["Service"]
    env = environment(service)
    (start,) = service["ExecStart"]
    prefix, argv = command(start, env)
    assert prefix == ""  # a failure of the container fails the unit
    settings, rest = docker_run_settings(argv)
    compose = compose_settings(SERVICES[unit_name])
    if compose["runtime"] == "nvidia":
        # The GPU device nodes of a Jetson are root:video 0660; uid 10001 needs the group.
        compose["groups"] = compose["groups"] | {"video"}
    assert settings == compose
    # The compose command, or the image's default (Dockerfile CMD ["run"]).
    svc_command = {"engine-init": ["run"], "navigation": ["wait-ready", "--timeout", "5", "--verify"],
                   "fleet-pull": ["pull", "--public-key", "/etc/engine-init/fleet.pub.pem"]}
    assert rest["command"] == svc_command[SERVICES[unit_name]]
    assert rest["rm"] is True and rest["pull"] == "never"
    # A leftover container of that name (a power cut) is removed first, whatever its state.
    cleanups = [command(line, env) for line in service.get("ExecStartPre", [])]
    assert ("-", ["docker", "rm", "--force", rest["name"]]) in cleanups


@pytest.mark.parametrize("flag", ["--read-only", "--cap-drop", "--security-opt", "--tmpfs",
                                  "--network", "--user", "--group-add", "--runtime", "--volume",
                                  "--env"])
def test_the_comparison_sees_each_security_flag(flag):
    """Dropping any one flag from engine-init's line makes it differ from compose."""
    service = parse_unit(UNITS / "engine-init.service")["Service"]
    _, argv = command(service["ExecStart"][0], environment(service))
    i = argv.index(flag)
    reduced = argv[:i] + argv[i + (1 if flag == "--read-only" else 2):]
    settings, _ = docker_run_settings(reduced)
    compose = compose_settings("engine-init")
    compose["groups"] = compose["groups"] | {"video"}
    assert settings != compose
