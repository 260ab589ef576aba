"""The identifiers of TensorRT's real Python bindings, per release (read from the PyPI binding
wheels by tools/trt_identifiers.py), and which emulated API shape is checked against which list.

A name passes when it is an identifier of that release's ``tensorrt.so``, or the tail of one (the
linker stores "desc" inside "get_error_desc"). TensorRT 8.5 has no binding wheel on PyPI: its
shape is checked against 8.6.1 minus what 8.6 added (``builder_optimization_level``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["IDENTIFIERS", "RELEASES", "allowed", "identifiers", "list_for", "unknown_names"]

IDENTIFIERS = Path(__file__).parent / "identifiers"
#: emulated major.minor -> identifier list of the real release it is checked against
RELEASES = {"8.5": "8.6.1", "8.6": "8.6.1", "10.3": "10.3.0", "10.13": "10.13.3"}
#: names the list's release has but the emulated release lacks
_ABSENT = {"8.5": frozenset({"builder_optimization_level"})}
#: names the release has whose string the linker cut in the ``.so`` ("dreallocate_outpu" in
#: 10.13.3's), read in the release's sources instead: the override TensorRT looks up by name
#: (TensorRT v10.13.3 python/src/infer/pyCore.cpp:610)
_READ_IN_SOURCES = {"10.13.3": frozenset({"reallocate_output"})}


@cache
def identifiers(release: str) -> frozenset[str]:
    lines = (IDENTIFIERS / f"trt-{release}.txt").read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


@cache
def _known(name: str, release: str) -> bool:
    ids = identifiers(release)
    return name in ids or any(i.endswith(name) for i in ids)


def list_for(version: str) -> str:
    """The identifier list that the emulated ``version`` ("10.3.0") is checked against."""
    major_minor = ".".join(version.split(".")[:2])
    if major_minor not in RELEASES:
        raise ValueError(f"no identifier list for TensorRT {version}; known: {sorted(RELEASES)}")
    return RELEASES[major_minor]


def allowed(name: str, version: str) -> bool:
    """Whether the real bindings of ``version`` define ``name``."""
    major_minor = ".".join(version.split(".")[:2])
    if name in _READ_IN_SOURCES.get(list_for(version), ()):
        return True
    return name not in _ABSENT.get(major_minor, ()) and _known(name, list_for(version))


def unknown_names(names: set[str], release: str) -> list[str]:
    """The names of ``names`` that the identifier list ``release`` ("10.3.0") lacks."""
    return sorted(n for n in names if not _known(n, release)
                  and n not in _READ_IN_SOURCES.get(release, ()))
