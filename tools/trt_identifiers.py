#!/usr/bin/env python3
"""Write the identifier lists of TensorRT's real Python bindings, one file per release.

The binding wheels on PyPI (``tensorrt-bindings``, ``tensorrt-cu12-bindings``,
``tensorrt-cu13-bindings``) hold the real ``tensorrt.so`` but not libnvinfer, so they cannot be
imported here. pybind11 stores every attribute, method and enum member name it defines as a
NUL-terminated string in the ``.so``; the linker merges strings that end another string
("desc" inside "get_error_desc"), so each string's trailing identifier is kept and the contract
test accepts a name that is a whole token or the tail of one. Names defined in the package's
``__init__.py`` (``__version__``, ``nptype``...) are added from its source.

    python tools/trt_identifiers.py OUT_DIR        # downloads the wheels with pip (needs PyPI)
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = {
    "8.6.1": "tensorrt-bindings==8.6.1",
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "10.13.3": "tensorrt-cu13-bindings==10.13.3.9",
}
_STRING = re.compile(rb"[\x20-\x7e]{2,}")
_TAIL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def so_identifiers(blob: bytes) -> set[str]:
    found = set()
    for raw in _STRING.findall(blob):
        match = _TAIL.search(raw.decode("ascii"))
        if match and not match[0].startswith("_Z"):
            found.add(match[0])
    return found


def python_identifiers(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def download(requirement: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux_2_28_x86_64", "-d", str(folder), requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(folder.glob(f"{name}-*.whl"))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for version, requirement in WHEELS.items():
            wheel = download(requirement, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                so = next(n for n in archive.namelist() if n.endswith("/tensorrt.so"))
                init = next(n for n in archive.namelist() if n.endswith("_bindings/__init__.py"))
                names = so_identifiers(archive.read(so))
                names |= python_identifiers(archive.read(init).decode())
            target = out / f"trt-{version}.txt"
            target.write_text(f"# {requirement}: {so}, {init}\n" + "\n".join(sorted(names)) + "\n")
            print(f"{target}: {len(names)} identifiers")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/backends/tensorrt/identifiers"))
