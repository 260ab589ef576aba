"""The image's constraints files, without Docker: one exact lock per base, with pins that fit each
base's CUDA driver and TensorRT bindings (tools/check_constraints.py resolves them in .ci/run)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.container.images import BUILD_ARGS, REPO, load_tool
from tests.container.images import CONSTRAINTS_DIR as CONSTRAINTS

#: The TensorRT bases and their driver's CUDA: cuda-python's runtime must not be newer.
TENSORRT_BASES = {"l4t-tensorrt-r10.3.0": "12.6", "l4t-tensorrt-r8.6.2": "12.2", "tensorrt-24.08-py3": "12.6"}


check_constraints = load_tool(REPO / "tools" / "check_constraints.py")


@pytest.mark.parametrize("path", sorted(CONSTRAINTS.glob("*.txt")), ids=lambda p: p.stem)
def test_every_constraints_file_is_an_exact_lock_with_its_platform(path):
    target = check_constraints.Target.of(path)
    assert target.python in {"3.10", "3.11"} and target.machine in {"aarch64", "x86_64"}
    pins = check_constraints.pins(path)
    assert {"click", "pydantic", "pydantic-core", "pyyaml", "onnx", "onnxruntime", "numpy",
            "ml-dtypes"} <= pins.keys()
    # numpy 1.x everywhere: the TensorRT 10.3 / 8.6 bindings predate numpy 2 (and CI runs the same).
    assert pins["numpy"].startswith("1."), pins["numpy"]
    assert int(pins["ml-dtypes"].split(".")[1]) < 6  # ml-dtypes 0.6 needs numpy 2


@pytest.mark.parametrize(("base", "cuda"), sorted(TENSORRT_BASES.items()))
def test_cuda_python_runtime_is_not_newer_than_the_base_driver(base, cuda):
    pins = check_constraints.pins(CONSTRAINTS / f"{base}.txt")
    assert ".".join(pins["cuda-python"].split(".")[:2]) == cuda
    assert "cuda" in check_constraints.Target.of(CONSTRAINTS / f"{base}.txt").extras


def test_pip_options_cover_every_manylinux_tag_of_the_glibc():
    options = check_constraints.Target("3.10", "aarch64", "2.35", "onnxruntime").pip_options()
    platforms = [options[i + 1] for i, option in enumerate(options) if option == "--platform"]
    assert platforms[0] == "manylinux2014_aarch64" and platforms[-1] == "manylinux_2_35_aarch64"
    assert len(platforms) == 1 + 35 - 17 + 1
    assert options[options.index("--abi") + 1] == "cp310"


def test_non_exact_pin_is_an_error(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# platform: python=3.10 machine=x86_64 glibc=2.35 extras=onnxruntime\nnumpy>=1.26\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        check_constraints.pins(bad)


def test_dockerfile_and_compose_defaults_name_the_default_base_and_its_constraints():
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)[1]
    constraints = re.search(r"^ARG CONSTRAINTS=(\S+)$", dockerfile, re.M)[1]
    assert base == "nvcr.io/nvidia/l4t-tensorrt:r10.3.0-devel" and constraints == "l4t-tensorrt-r10.3.0"
    args = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["engine-init"]["build"]["args"]
    assert args["BASE_IMAGE"].endswith(f":-{base}}}") and args["CONSTRAINTS"].endswith(f":-{constraints}}}")


def test_each_image_installs_the_extras_its_constraints_file_resolves():
    """The Dockerfile's default (the default base), CI's build arguments (the CI base): the fleet
    commands work in every image, with pinned dependencies."""
    dockerfile = (REPO / "Dockerfile").read_text()
    default = re.search(r"^ARG EXTRAS=(\S+)$", dockerfile, re.M)[1]
    ci = yaml.safe_load((REPO / "compose.ci.yaml").read_text())["services"]["engine-init"]["build"]["args"]
    extras = {p.stem: check_constraints.Target.of(p).extras for p in CONSTRAINTS.glob("*.txt")}
    assert extras["l4t-tensorrt-r10.3.0"] == default == "onnxruntime,cuda,fleet"
    assert {extras[base] for base in TENSORRT_BASES} == {default}
    assert extras["ci-debian-bookworm"] == ci["EXTRAS"] == BUILD_ARGS["EXTRAS"] == "onnxruntime,fleet"
    for path in CONSTRAINTS.glob("*.txt"):
        assert {"cryptography", "oras", "requests"} <= check_constraints.pins(path).keys(), path.name
