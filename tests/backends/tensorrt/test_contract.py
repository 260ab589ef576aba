"""Contract: every TensorRT name the runtime touches, in every branch, exists in the real
bindings of each release that branch claims. The names are recorded by the stand-in
(FakeTensorRT) while the runtime runs through all its scenarios; the identifier lists were read
from the real PyPI binding wheels by tools/trt_identifiers.py.

A name passes when it is an identifier of that release's tensorrt.so, or the tail of one (the
linker stores "desc" inside "get_error_desc"). TensorRT 8.5 has no binding wheel on PyPI; its
branch is checked against 8.6.1, the closest, and the stand-in's 8.5 shape refuses
``builder_optimization_level`` (added in 8.6) on its own.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path

import pytest

from app import InputProfile, PrecisionMode
from app.backends.tensorrt.api import TrtApi
from app.cancel import CANCEL
from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
from tests.helpers import DYN, runtime_for
from tests.helpers import trt_build_config as config

IDENTIFIERS = Path(__file__).parent / "identifiers"
#: stand-in API shape -> identifier list of the real release it is checked against
RELEASES = {"8.5.2": "8.6.1", "8.6.2": "8.6.1", "10.3.0": "10.3.0", "10.13.3": "10.13.3"}


@cache
def identifiers(release: str) -> frozenset[str]:
    lines = (IDENTIFIERS / f"trt-{release}.txt").read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def unknown_names(names: set[str], release: str) -> list[str]:
    ids = identifiers(release)
    return sorted(n for n in names if n not in ids and not any(i.endswith(n) for i in ids))


def drive_every_branch(fake: FakeTensorRT, tmp_path: Path, corpus: dict[str, Path]) -> set[str]:
    """Run the runtime through success, dynamic shapes, INT8 (data, cache), DLA, warm-up,
    parser failure, build failure, progress and cancel; return the names it touched."""
    fake.dla_cores = 1
    scenarios = [
        ("dinov2_vpr", config(tmp_path / "a", "dinov2_vpr", PrecisionMode.FP32,
                              input_shapes={None: InputProfile.fixed((1, 3, 32, 32))})),
        ("lightglue", config(tmp_path / "b", "lightglue", input_shapes={"desc0": DYN, "desc1": DYN},
                             verify="infer")),
        ("aliked", config(tmp_path / "c", "aliked", PrecisionMode.INT8,
                          calibration_dir=corpus["calibration"] / "aliked", dla_core=0)),
        ("aliked", config(tmp_path / "c", "aliked", PrecisionMode.INT8,
                          calibration_dir=corpus["calibration"] / "aliked")),  # cache reused
    ]
    for model, cfg in scenarios:
        cfg.engine_path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        runtime_for(fake).compile_engine(corpus[model], cfg)
    fake.parser_errors = [(1, 0, "bad")]
    with contextlib.suppress(Exception):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    fake.parser_errors, fake.fail_build = [], True
    with contextlib.suppress(Exception):
        runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
    fake.fail_build = False
    if fake.has_monitor:
        fake.on_step = lambda step: CANCEL.set()
        try:
            with contextlib.suppress(Exception):
                runtime_for(fake).compile_engine(corpus["aliked"], config(tmp_path, "aliked"))
        finally:
            CANCEL.clear()
    return set(fake.names)


@pytest.mark.parametrize("shape", sorted(RELEASES))
def test_every_name_exists_in_the_real_bindings(shape, tmp_path, corpus):
    with FakeTensorRT(shape) as fake:
        names = drive_every_branch(fake, tmp_path, corpus)
    # The scenarios really reached the version-specific and optional parts:
    assert {"Builder", "OnnxParser", "set_memory_pool_limit", "build_serialized_network",
            "deserialize_cuda_engine", "IInt8EntropyCalibrator2", "get_batch", "write_calibration_cache",
            "create_timing_cache", "DLA_core", "set_shape", "execute_async_v3", "get_error"} <= names
    assert ("IProgressMonitor" in names) == shape.startswith("10.")
    assert ("EXPLICIT_BATCH" in names) == shape.startswith("8.")
    assert unknown_names(names, RELEASES[shape]) == []


def test_the_check_catches_a_name_of_another_release():
    assert unknown_names({"max_workspace_size"}, "10.3.0") == ["max_workspace_size"]
    assert unknown_names({"max_workspace_size"}, "8.6.1") == []
    assert unknown_names({"IProgressMonitor", "progress_monitor"}, "8.6.1") == [
        "IProgressMonitor", "progress_monitor"]


def test_the_contract_fails_if_the_10x_path_used_max_workspace_size(tmp_path, corpus, monkeypatch):
    original = TrtApi.configure

    def old_style(self, config, precision, workspace_bytes, optimization_level):  # type: ignore[no-untyped-def]
        original(self, config, precision, workspace_bytes, optimization_level)
        config.max_workspace_size = workspace_bytes  # the TensorRT 8 way, removed in 10

    monkeypatch.setattr(TrtApi, "configure", old_style)
    with FakeTensorRT("10.3.0") as fake:
        names = drive_every_branch(fake, tmp_path, corpus)
    assert unknown_names(names, "10.3.0") == ["max_workspace_size"]


def test_identifier_lists_come_from_the_wheels():
    for release, requirement in (("8.6.1", "tensorrt-bindings==8.6.1"),
                                 ("10.3.0", "tensorrt-cu12-bindings==10.3.0"),
                                 ("10.13.3", "tensorrt-cu13-bindings==10.13.3.9")):
        header = (IDENTIFIERS / f"trt-{release}.txt").read_text().splitlines()[0]
        assert header.startswith(f"# {requirement}:") and "tensorrt.so" in header
        assert len(identifiers(release)) > 5000
