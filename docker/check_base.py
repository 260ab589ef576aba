"""Build-time checks of the base image, run by the Dockerfile with the base's ``python3`` and
again with the job's environment (``/opt/engine-init/bin/python``).

- Python >= 3.10. JetPack 5.1's bases have Python 3.8 only, and so do their TensorRT bindings.
- The constraints file was made for this Python and CPU (its ``# platform:`` line).
- pip is importable: the environment is made without ensurepip and filled by the base's pip.
- With ``--require-tensorrt 1``: TensorRT's Python bindings are installed. They are found, and
  their version read, WITHOUT importing them: on the Jetson bases ``import tensorrt`` fails
  during ``docker build``, since driver-level libraries (``libnvdla_compiler.so``, ``libcuda``)
  are empty placeholders until the NVIDIA runtime mounts the host's at ``docker run``. The job
  imports TensorRT at run time.

Kept to Python 3.8 syntax so that an old base gets this message, not a SyntaxError.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import sys
from pathlib import Path

_PLATFORM_LINE = re.compile(r"^#\s*platform:\s*(.+)$", re.M)
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
_TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12-bindings", "tensorrt-cu13-bindings",
                           "tensorrt-bindings", "tensorrt-cu12")


class BuildCheckError(Exception):
    """What is wrong with the base, and how to fix it."""


def check_python(version: tuple[int, int]) -> None:
    if version < (3, 10):
        raise BuildCheckError(
            f"this base has Python {version[0]}.{version[1]}; engine-init needs Python >= 3.10. "
            "JetPack 5.1 (l4t-tensorrt r8.5.2.2) is not supported: its TensorRT bindings exist "
            "only for Python 3.8. Use JetPack 6 (l4t-tensorrt r8.6.2 or r10.3.0)")


def platform_of(constraints: Path) -> dict[str, str]:
    match = _PLATFORM_LINE.search(constraints.read_text())
    if match is None:
        raise BuildCheckError(f"{constraints.name} has no '# platform:' line")
    return dict(item.split("=", 1) for item in match[1].split())


def check_constraints(constraints: Path, version: tuple[int, int], machine: str) -> None:
    here = {"python": f"{version[0]}.{version[1]}", "machine": machine}
    if not constraints.is_file():
        raise BuildCheckError(
            f"no constraints file {constraints.name}: pass --build-arg CONSTRAINTS=<one of "
            f"{', '.join(_matching(constraints.parent, here)) or 'docker/constraints/*.txt'}>")
    wanted = platform_of(constraints)
    if any(wanted.get(key) != value for key, value in here.items()):
        others = _matching(constraints.parent, here)
        raise BuildCheckError(
            f"{constraints.name} is for Python {wanted.get('python')} on {wanted.get('machine')}, but "
            f"this base has Python {here['python']} on {machine}: pass --build-arg CONSTRAINTS="
            + ("|".join(others) if others else "<a new docker/constraints file for this base>"))


def _matching(folder: Path, here: dict[str, str]) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.txt")):
        try:
            fields = platform_of(path)
        except BuildCheckError:
            continue
        if all(fields.get(key) == value for key, value in here.items()):
            names.append(path.stem)
    return names


def check_pip() -> None:
    if importlib.util.find_spec("pip") is None:
        raise BuildCheckError("this base's python3 has no pip: the image installs its packages with "
                              "the base's pip (python3 -m pip); use a base that has python3-pip")


def tensorrt_bindings() -> tuple[str, str]:
    """(where, version) of the ``tensorrt`` package, found without importing it."""
    spec = importlib.util.find_spec("tensorrt")
    if spec is None:
        raise BuildCheckError(
            "TensorRT's Python bindings are not installed in this base (no 'tensorrt' package for "
            f"{sys.executable}): use an l4t-tensorrt or tensorrt base, or --build-arg "
            "REQUIRE_TENSORRT=0 for an image that runs ONNX Runtime only")
    where = spec.origin or ", ".join(spec.submodule_search_locations or [])
    version = ""
    if spec.origin and spec.origin.endswith(".py"):
        match = _VERSION_LINE.search(Path(spec.origin).read_text(encoding="utf-8", errors="replace"))
        version = match[1] if match else ""
    if not version:
        from importlib import metadata

        for dist in _TENSORRT_DISTRIBUTIONS:
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return where, version or "(version unknown)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="engine-init's build-time checks of the base image")
    parser.add_argument("--constraints", type=Path, required=True)
    parser.add_argument("--require-tensorrt", choices=("0", "1"), default="1")
    args = parser.parse_args(argv)
    version = (sys.version_info[0], sys.version_info[1])
    try:
        check_python(version)
        check_constraints(args.constraints, version, platform.machine())
        check_pip()
        if args.require_tensorrt == "1":
            where, trt_version = tensorrt_bindings()
            print(f"engine-init build: TensorRT bindings {trt_version} at {where} (found, not "
                  "imported: the NVIDIA runtime supplies their driver libraries at docker run)")
    except BuildCheckError as exc:
        print(f"engine-init build: error: {exc}", file=sys.stderr)
        return 1
    print(f"engine-init build: {sys.executable}: Python {version[0]}.{version[1]} on "
          f"{platform.machine()}, pip present, constraints {args.constraints.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
