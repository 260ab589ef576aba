"""compose.yaml's security settings per service, and the same settings read from a
``docker run`` command line, as plain comparable values (tests/deploy compare them)."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

#: The settings every way of starting the job must agree on.
KEYS = ("runtime", "user", "groups", "read_only", "network", "cap_drop", "no_new_privileges",
        "tmpfs", "volumes", "env", "image")
#: The video group's id on JetPack hosts (Ubuntu): GPU device nodes are root:video 0660.
VIDEO_GID = 44


def require(ok: bool, reason: str) -> None:
    """Skip with ``reason`` where the tool is missing; fail under REQUIRE_DEPLOY_TESTS=1 (CI)."""
    if ok:
        return
    if os.environ.get("REQUIRE_DEPLOY_TESTS") == "1":
        pytest.fail(f"{reason} (REQUIRE_DEPLOY_TESTS=1)")
    pytest.skip(reason)


def _defaults(text: str) -> str:
    """``${VAR:-default}`` as compose resolves it when VAR is unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)


def _image_user() -> str:
    """The Dockerfile's final ``USER``, with its ``ARG`` defaults (compose sets no ``user:``)."""
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], user)


def _volume(spec: str) -> tuple[str, str, str]:
    host, container, *mode = spec.split(":")
    return host, container, mode[0] if mode else "rw"


#: compose.yaml's service keys: those of KEYS, and those that are not about security.
_COMPOSE_KEYS = {"runtime", "user", "group_add", "read_only", "network_mode", "cap_drop",
                 "security_opt", "tmpfs", "volumes", "environment", "image",
                 "build", "restart", "command", "depends_on", "profiles"}


def compose_settings(service: str) -> dict[str, Any]:
    svc = yaml.safe_load((REPO / "compose.yaml").read_text())["services"][service]
    unknown = set(svc) - _COMPOSE_KEYS
    assert not unknown, f"compose.yaml's {service} has {unknown}: compare it in {__name__}"
    opts = set(svc.get("security_opt", []))
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {
        "runtime": svc.get("runtime"),
        "user": svc.get("user", _image_user()),
        "groups": frozenset(_defaults(str(g)) for g in svc.get("group_add", [])),
        "read_only": bool(svc.get("read_only", False)),
        "network": svc.get("network_mode"),
        "cap_drop": frozenset(svc.get("cap_drop", [])),
        "no_new_privileges": "no-new-privileges:true" in opts or "no-new-privileges" in opts,
        "tmpfs": frozenset(svc.get("tmpfs", [])),
        "volumes": frozenset(_volume(_defaults(v)) for v in svc.get("volumes", [])),
        "env": {k: str(v) for k, v in env.items()},
        "image": _defaults(svc["image"]),
    }


_FLAGS = {"--rm": None, "--read-only": None}
_VALUED = {"--name": "name", "--pull": "pull", "--runtime": "runtime", "--user": "user",
           "-u": "user", "--group-add": "groups", "--network": "network", "--net": "network",
           "--cap-drop": "cap_drop", "--security-opt": "security_opt", "--tmpfs": "tmpfs",
           "--env": "env", "-e": "env", "--volume": "volumes", "-v": "volumes"}
_MANY = {"groups", "cap_drop", "security_opt", "tmpfs", "env", "volumes"}


def docker_run_settings(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``docker run ...`` as (the settings of :data:`KEYS`, the rest: name, pull, rm, command).
    An option this parser does not know fails the test: a new flag must be looked at."""
    assert argv[:2] == ["docker", "run"], argv
    seen: dict[str, Any] = {k: [] for k in _MANY}
    rest: dict[str, Any] = {"rm": False}
    args = iter(argv[2:])
    for arg in args:
        if not arg.startswith("-"):
            image, command = arg, list(args)
            break
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            rest[name.lstrip("-").replace("-", "_")] = True
            continue
        assert name in _VALUED, f"docker run option {name} is not compared with compose.yaml"
        key = _VALUED[name]
        value = value if eq else next(args)
        if key in _MANY:
            seen[key].append(value)
        else:
            seen[key] = value
    else:
        raise AssertionError(f"no image in {argv}")
    opts = set(seen["security_opt"])
    settings = {
        "runtime": seen.get("runtime"),
        "user": seen.get("user"),
        "groups": frozenset(seen["groups"]),
        "read_only": rest.pop("read_only", False),
        "network": seen.get("network"),
        "cap_drop": frozenset(seen["cap_drop"]),
        "no_new_privileges": "no-new-privileges:true" in opts or "no-new-privileges" in opts,
        "tmpfs": frozenset(seen["tmpfs"]),
        "volumes": frozenset(_volume(v) for v in seen["volumes"]),
        "env": dict(item.split("=", 1) for item in seen["env"]),
        "image": image,
    }
    assert opts <= {"no-new-privileges:true", "no-new-privileges"}, opts
    rest.update(name=seen.get("name"), pull=seen.get("pull"), command=command)
    return settings, rest
