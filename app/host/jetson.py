"""JetPack from the L4T release: ``/etc/nv_tegra_release`` (or ``$L4T_VERSION``) and a table.

The table lists only releases NVIDIA published; an L4T release not in it is reported as
``l4t<version>`` (never mapped to a guessed JetPack) and the config's ``jetpack`` key overrides.
Hosts without an L4T release are not Jetsons and get :data:`app.values.NO_JETPACK`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.cache.fsread import UnsafeFileError, read_small
from app.values import NO_JETPACK

RELEASE_FILE = Path("/etc/nv_tegra_release")

#: L4T release -> JetPack release, as published by NVIDIA.
L4T_TO_JETPACK: dict[str, str] = {
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "35.6.2": "5.1.5",
    "36.2.0": "6.0",  # developer preview
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.2": "6.1.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "36.4.7": "6.2.1",
    "38.2.0": "7.0",
    "38.2.1": "7.0",
    "38.2.2": "7.0",
}

_LINE_RE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>\d+(?:\.\d+)?)\b")
_VERSION_RE = re.compile(r"R?(?P<v>\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class JetsonRelease:
    """``l4t`` is ``""`` off-Jetson; ``known`` says whether the table had the release."""

    l4t: str
    jetpack: str
    known: bool
    source: str


def _normalise(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def parse_nv_tegra_release(text: str) -> str | None:
    """The L4T version ("36.4.3") from the file's first line, or None if it is not one."""
    first = text.splitlines()[0] if text else ""
    match = _LINE_RE.match(first.strip())
    if match is None:
        return None
    return _normalise(f"{match['major']}.{match['rev']}")


def jetpack_for(l4t: str) -> tuple[str, bool]:
    """(JetPack token, known) for an L4T version; unknown releases keep their L4T identity."""
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t], True
    return f"l4t{l4t}", False


def _read_release(path: Path) -> str:
    """The release file's text (its first 4 KiB), through the safe reader: a FIFO there is an
    error, not a hang. ``/dev/null`` is what a compose file mounts off-Jetson: read as empty."""
    try:
        return read_small(path, 4096, follow_links=True, truncate=True).decode("utf-8", "replace")
    except UnsafeFileError:
        if os.stat(path).st_rdev == os.stat(os.devnull).st_rdev:
            return ""
        raise


def detect_release(
    env: Mapping[str, str] | None = None, release_file: Path = RELEASE_FILE
) -> JetsonRelease:
    """Read the L4T release from ``$L4T_VERSION`` or the release file; not a Jetson if neither."""
    env = os.environ if env is None else env
    raw_env = env.get("L4T_VERSION", "").strip()
    if raw_env:
        match = _VERSION_RE.fullmatch(raw_env)
        if match is None:
            raise ValueError(f"L4T_VERSION={raw_env!r} is not a version like 36.4.3")
        l4t = _normalise(match["v"])
        return JetsonRelease(l4t, *jetpack_for(l4t), source="L4T_VERSION")
    try:
        text = _read_release(release_file)
    except OSError:
        return JetsonRelease("", NO_JETPACK, True, source="none")
    if not text.strip():
        # An empty file is what a compose file mounts off-Jetson (/dev/null): not a Jetson.
        return JetsonRelease("", NO_JETPACK, True, source=str(release_file))
    parsed = parse_nv_tegra_release(text)
    if parsed is None:
        raise ValueError(f"{release_file} does not start with an L4T release line: "
                         f"{text.splitlines()[0][:80] if text else '(empty)'!r}")
    return JetsonRelease(parsed, *jetpack_for(parsed), source=str(release_file))
