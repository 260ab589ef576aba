"""The version of an installed Python package, read without importing it.

Importing TensorRT or ONNX Runtime costs a noticeable part of a second (their native libraries
load), and ``importlib.metadata`` tens of milliseconds; a warm boot needs only the version
string. Both packages declare ``__version__ = "x.y.z"`` literally in their ``__init__.py``.
"""

from __future__ import annotations

import importlib.util
import re

from app.cache.fsread import read_small

_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["'](\d+(?:\.\d+){1,3})["']""", re.M)


def declared_version(module: str, distributions: tuple[str, ...] = ()) -> str:
    """``module``'s literal ``__version__``, else its distribution's metadata, else ''."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        try:
            source = read_small(spec.origin, 4 << 20, follow_links=True, truncate=True)
            match = _VERSION_LINE.search(source.decode("utf-8", "replace"))
        except OSError:
            match = None
        if match:
            return match[1]
    from importlib import metadata

    for dist in distributions or (module,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""
