"""Resolve each image constraints file for its base's platform and Python, as pip would there.

Every ``docker/constraints/<base>.txt`` names its base's platform on one line::

    # platform: python=3.10 machine=aarch64 glibc=2.35 extras=onnxruntime,cuda

and this tool runs ``pip download --only-binary=:all:`` for that Python, CPU and C library (every
``manylinux`` tag the base's glibc accepts) with the file as constraints, on engine-init with
those extras. A pin without a wheel for the base fails here instead of in ``docker build`` on a
robot. The file must be a complete lock: a package the resolution needs but the file does not
pin, or a pin it does not use, is an error too.

    python tools/check_constraints.py                   # every file, into a temporary folder
    python tools/check_constraints.py --dest DIR FILE   # keep the wheels (the CI wheelhouse)

Needs PyPI (or the index pip is configured for).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS_DIR = REPO / "docker" / "constraints"
_PLATFORM_LINE = re.compile(r"^#\s*platform:\s*(.+)$", re.M)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")
#: Wheels the Dockerfile's build needs besides the job's own requirements (pip builds the
#: project from source: setuptools through its build backend).
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Target:
    """The platform one constraints file is for."""

    python: str
    machine: str
    glibc: str
    extras: str

    @classmethod
    def of(cls, path: Path) -> Target:
        match = _PLATFORM_LINE.search(path.read_text())
        if match is None:
            raise ValueError(f"{path}: no '# platform: python=... machine=... glibc=... extras=...' line")
        fields = dict(item.split("=", 1) for item in match[1].split())
        missing = {"python", "machine", "glibc", "extras"} - fields.keys()
        if missing:
            raise ValueError(f"{path}: the platform line lacks {', '.join(sorted(missing))}")
        return cls(fields["python"], fields["machine"], fields["glibc"], fields["extras"])

    def pip_options(self) -> list[str]:
        major, minor = (int(part) for part in self.glibc.split("."))
        if major != 2 or minor < 17:
            raise ValueError(f"glibc {self.glibc}: manylinux wheels need glibc 2.17 or newer")
        platforms = [f"manylinux2014_{self.machine}"]
        platforms += [f"manylinux_2_{n}_{self.machine}" for n in range(17, minor + 1)]
        abi = "cp" + self.python.replace(".", "")
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python,
                   "--abi", abi]
        for platform in platforms:
            options += ["--platform", platform]
        return options


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path}: {line!r} is not an exact pin (name==version)")
        found[canonical(match[1])] = match[2]
    return found


def downloaded(folder: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the wheels in ``folder``."""
    return {canonical(wheel.name.split("-")[0]): wheel.name.split("-")[1] for wheel in folder.glob("*.whl")}


def resolve(path: Path, dest: Path) -> list[str]:
    """Download ``path``'s resolution into ``dest``; the problems found (empty when sound)."""
    target = Target.of(path)
    command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               *target.pip_options(), "-c", str(path), "-d", str(dest),
               f"{REPO}[{target.extras}]"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        return [f"pip cannot resolve it for {target}: " + " | ".join(tail)]
    wanted, got = pins(path), downloaded(dest)
    problems = [f"{name} {version} is needed but not pinned" for name, version in sorted(got.items())
                if name not in wanted]
    problems += [f"{name}=={version} is pinned but not needed" for name, version in sorted(wanted.items())
                 if name not in got]
    problems += [f"{name}: pinned {wanted[name]}, resolved {got[name]}" for name in sorted(got)
                 if name in wanted and got[name] != wanted[name]]
    return problems


def add_build_requirements(path: Path, dest: Path) -> None:
    """Put the wheels pip needs to build engine-init itself into ``dest`` (offline builds)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    *Target.of(path).pip_options(), "-d", str(dest), *BUILD_REQUIREMENTS], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: docker/constraints/*.txt")
    parser.add_argument("--dest", type=Path, help="keep the wheels (and the build requirements) here")
    args = parser.parse_args(argv)
    files = args.files or sorted(CONSTRAINTS_DIR.glob("*.txt"))
    if not files:
        parser.error(f"no constraints files in {CONSTRAINTS_DIR}")
    if args.dest and len(files) != 1:
        parser.error("--dest takes exactly one constraints file")
    failed = 0
    for path in files:
        with tempfile.TemporaryDirectory(prefix="engine-init-constraints-") as scratch:
            dest = args.dest or Path(scratch)
            try:
                problems = resolve(path, dest)
            except ValueError as exc:
                problems = [str(exc)]
            if not problems and args.dest:
                add_build_requirements(path, dest)
        status = "ok" if not problems else "FAILED"
        print(f"{path.name}: {status}" + "".join(f"\n  {problem}" for problem in problems))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
