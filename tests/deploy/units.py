"""Reading deploy/systemd's units as systemd does, for the checks ``systemd-analyze verify``
does not make (what the ``docker run`` lines say)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.helpers import REPO

UNITS = REPO / "deploy" / "systemd"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; a trailing backslash continues a line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        if not pending and raw.lstrip().startswith(("#", ";")):
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        env.update(item.split("=", 1) for item in shlex.split(value))
    return env


def command(line: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """An Exec line as (its prefix characters, argv with ``${VAR}`` expanded in each word)."""
    prefix = re.match(r"[-@:+!]*", line)[0]
    words = shlex.split(line[len(prefix):])
    return prefix, [re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], w) for w in words]
