"""The image's build-time checks (docker/check_base.py), without Docker: which base is refused and
why, and TensorRT's bindings found and versioned without importing them."""

from __future__ import annotations

import re
import sys

import pytest

from tests.container.images import CONSTRAINTS_DIR as CONSTRAINTS
from tests.container.images import REPO, load_tool

check_base = load_tool(REPO / "docker" / "check_base.py")


def test_python_38_base_is_refused_naming_jetpack_51():
    with pytest.raises(check_base.BuildCheckError, match=r"Python 3\.8.*>= 3\.10.*JetPack 5\.1"):
        check_base.check_python((3, 8))
    check_base.check_python((3, 10))


def test_constraints_for_another_platform_name_the_right_file():
    with pytest.raises(check_base.BuildCheckError) as caught:
        check_base.check_constraints(CONSTRAINTS / "l4t-tensorrt-r10.3.0.txt", (3, 10), "x86_64")
    assert "aarch64" in str(caught.value) and "CONSTRAINTS=tensorrt-24.08-py3" in str(caught.value)
    with pytest.raises(check_base.BuildCheckError, match=r"no constraints file nope\.txt"):
        check_base.check_constraints(CONSTRAINTS / "nope.txt", (3, 10), "aarch64")
    check_base.check_constraints(CONSTRAINTS / "l4t-tensorrt-r8.6.2.txt", (3, 10), "aarch64")


def test_bindings_found_and_versioned_without_importing(tmp_path, monkeypatch):
    """A ``tensorrt`` whose import raises, as on a Jetson base during docker build."""
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ImportError("libnvdla_compiler.so: file too short")\n__version__ = "8.6.2"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    where, version = check_base.tensorrt_bindings()
    assert (where, version) == (str(package / "__init__.py"), "8.6.2")
    assert "tensorrt" not in sys.modules


def test_bindings_version_from_dist_info_when_no_version_line(tmp_path, monkeypatch):
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("from .tensorrt import *\n")
    (tmp_path / "tensorrt-10.3.0.dist-info").mkdir()
    (tmp_path / "tensorrt-10.3.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tensorrt\nVersion: 10.3.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_base.tensorrt_bindings()[1] == "10.3.0"


def test_missing_bindings_say_how_to_build_without(monkeypatch):
    monkeypatch.setattr(check_base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(check_base.BuildCheckError, match="REQUIRE_TENSORRT=0"):
        check_base.tensorrt_bindings()


def test_dockerfile_requires_tensorrt_and_lists_jetpack_51_only_as_unsupported():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG REQUIRE_TENSORRT=1$", dockerfile, re.M)
    header, _, rest = dockerfile.partition("# Not supported: JetPack 5.1")
    assert rest and "5.1" not in header and "r8.5" not in header
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert "import tensorrt" not in instructions  # at build time it fails on every Jetson base
