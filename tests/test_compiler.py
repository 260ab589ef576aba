"""EngineCompiler acceptance: the ten behaviours of the core issue, one test each, plus the
provenance rule. The runtime is the stand-in FakeRuntime (fast, deterministic); the real ONNX
Runtime backend runs through the same compiler in tests/backends and tests/integration."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from app import (
    CacheWriteError,
    CalibrationCacheError,
    CompileOutcome,
    EngineBuildError,
    EngineCompiler,
    EngineFilenameSchema,
    HostCapabilities,
    PrecisionMode,
    Sha256Sidecar,
)
from app.cache.hashing import sidecar_path
from app.cache.record import read_record, record_path
from tests.helpers import ORIN, EventLog, FakeRuntime, make_request, snapshot

Events = tuple[logging.Logger, EventLog]


def _compile(runtime: FakeRuntime, events: Events, request):  # type: ignore[no-untyped-def]
    return EngineCompiler(inference_runtime=runtime, logger=events[0]).compile_engines_for_corpus(request)


def test_cold_cache_builds_every_backbone_with_valid_sidecars(specs, tmp_path, events):
    runtime = FakeRuntime()
    results = _compile(runtime, events, make_request(specs, tmp_path))
    assert [r.outcome for r in results] == [CompileOutcome.BUILT] * 3
    assert runtime.built == ["dinov2_vpr", "lightglue", "aliked"]
    for result in results:
        assert result.entry.engine_path.is_file()
        assert Sha256Sidecar.verify(result.entry.engine_path)
    log = events[1]
    assert [kv["model_name"] for kv in log.kv("c10.engine.cache.miss")] == runtime.built
    # No fleet candidates: the miss says a build follows.
    assert {r.getMessage() for r in log.of("c10.engine.cache.miss")} == {
        f"{n}: no reusable engine (absent); building" for n in runtime.built}
    [summary] = log.kv("c10.engine.compile.summary")
    assert (summary["engines_built"], summary["engines_reused"], summary["total"]) == (3, 0, 3)


def test_warm_cache_calls_nothing_and_reports_hits(specs, tmp_path, events):
    _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    events[1].records.clear()
    runtime = FakeRuntime()
    results = _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.calls == []
    assert [r.outcome for r in results] == [CompileOutcome.REUSED] * 3
    assert len(events[1].of("c10.engine.cache.hit")) == 3
    assert events[1].of("c10.engine.cache.miss") == []


def test_mixed_cache_builds_only_the_missing(specs, tmp_path, events):
    _compile(FakeRuntime(), events, make_request(specs[:1], tmp_path))
    runtime = FakeRuntime()
    results = _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.built == ["lightglue", "aliked"]
    assert [r.outcome for r in results] == [CompileOutcome.REUSED, CompileOutcome.BUILT,
                                            CompileOutcome.BUILT]


@pytest.mark.parametrize("other", [HostCapabilities(72, "6.2", "10.3"),
                                   HostCapabilities(87, "6.1", "10.3"),
                                   HostCapabilities(87, "6.2", "8.6")])
def test_host_change_rebuilds_under_new_names_and_keeps_old_files(specs, tmp_path, events, other):
    _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    before = snapshot(tmp_path)
    runtime = FakeRuntime()
    results = _compile(runtime, events, make_request(specs, tmp_path, host=other))
    assert len(runtime.calls) == 3
    for result in results:
        parsed = EngineFilenameSchema.parse(result.entry.engine_path.name)
        assert (parsed.sm, parsed.jetpack, parsed.trt) == (other.sm, other.jetpack, other.trt)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize("damage", ["tamper", "delete", "garbage"])
def test_bad_sidecar_invalidates_that_engine_only(specs, tmp_path, events, damage):
    first = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    sidecar = sidecar_path(first[1].entry.engine_path)
    if damage == "tamper":
        sidecar.write_text("0" * 64)
    elif damage == "delete":
        sidecar.unlink()
    else:
        sidecar.write_bytes(b"\xff" * 5000)
    events[1].records.clear()
    runtime = FakeRuntime()
    results = _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.built == ["lightglue"]
    mismatches = events[1].of("c10.engine.sidecar.mismatch")
    assert len(mismatches) == 1 and mismatches[0].levelno == logging.WARNING
    assert mismatches[0].kv["model_name"] == "lightglue"  # type: ignore[attr-defined]
    assert [r.outcome for r in results] == [CompileOutcome.REUSED, CompileOutcome.BUILT,
                                            CompileOutcome.REUSED]


def test_tampered_engine_bytes_are_rebuilt(specs, tmp_path, events):
    first = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    engine = first[0].entry.engine_path
    engine.write_bytes(engine.read_bytes()[:-1] + b"X")
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.built == ["dinov2_vpr"]


def test_build_error_propagates_unchanged_and_stops(specs, tmp_path, events):
    _compile(FakeRuntime(), events, make_request(specs[:1], tmp_path))
    before = snapshot(tmp_path)
    error = EngineBuildError("parser said no")
    runtime = FakeRuntime(fail_on="lightglue", error=error)
    with pytest.raises(EngineBuildError) as caught:
        _compile(runtime, events, make_request(specs, tmp_path))
    assert caught.value is error and str(caught.value) == "parser said no"
    assert runtime.built == ["lightglue"]  # aliked never attempted
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert not [k for k in after if k.startswith("lightglue") or k.startswith("aliked")]
    assert not [k for k in after if ".tmp-" in k]


def test_calibration_error_logs_one_error_event_then_propagates(specs, tmp_path, events):
    error = CalibrationCacheError("no calibration data")
    runtime = FakeRuntime(fail_on="dinov2_vpr", error=error)
    calib = tmp_path / "calib"
    with pytest.raises(CalibrationCacheError) as caught:
        _compile(runtime, events, make_request(specs, tmp_path / "cache",
                                              precision=PrecisionMode.INT8, calibration_path=calib))
    assert caught.value is error
    [record] = events[1].of("c10.engine.compile.error")
    assert record.levelno == logging.ERROR
    # calibration_path is the folder the request names (log consumers match on it); the
    # model's own subfolder is calibration_dir.
    assert record.kv == {  # type: ignore[attr-defined]
        "model_name": "dinov2_vpr", "calibration_path": str(calib),
        "calibration_dir": str(calib / "dinov2_vpr"), "error_class": "CalibrationCacheError"}


def test_compile_error_without_calibration_path_carries_none(specs, tmp_path, events):
    runtime = FakeRuntime(fail_on="dinov2_vpr", error=EngineBuildError("no"))
    with pytest.raises(EngineBuildError):
        _compile(runtime, events, make_request(specs, tmp_path))
    [kv] = events[1].kv("c10.engine.compile.error")
    assert kv["calibration_path"] is None and kv["calibration_dir"] is None


def test_a_failure_s_summary_counts_the_engines_built_before_it(specs, tmp_path, events):
    runtime = FakeRuntime(fail_on="aliked", error=EngineBuildError("no"))
    with pytest.raises(EngineBuildError):
        _compile(runtime, events, make_request(specs, tmp_path))
    [summary] = events[1].kv("c10.engine.compile.summary")
    assert (summary["engines_built"], summary["engines_reused"], summary["total"]) == (2, 0, 3)
    assert summary["stopped_at"] == "aliked"
    [record] = events[1].of("c10.engine.compile.summary")
    assert record.getMessage().endswith("2 built, 0 reused of 3; stopped at aliked")


def test_names_and_sidecars_follow_the_schema(specs, tmp_path, events):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    assert results[0].entry.engine_path.name == "dinov2_vpr__sm87_jp6.2_trt10.3_fp16.engine"
    for result in results:
        path = result.entry.engine_path
        parsed = EngineFilenameSchema.parse(path.name)
        assert EngineFilenameSchema.build(model_name=parsed.model_name, sm=parsed.sm,
                                          jetpack=parsed.jetpack, trt=parsed.trt,
                                          precision=parsed.precision) == path.name
        assert sidecar_path(path).read_text() == result.entry.sha256_hex
        assert len(result.entry.sha256_hex) == 64


def test_durations_are_float_when_built_and_none_when_reused(specs, tmp_path, events):
    built = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    reused = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    assert all(isinstance(r.compile_duration_s, float) and r.compile_duration_s >= 0 for r in built)
    assert all(r.compile_duration_s is None for r in reused)


def test_empty_corpus_touches_nothing_and_logs_a_zero_summary(tmp_path, events):
    (tmp_path / "keep.txt").write_text("x")
    before = snapshot(tmp_path)
    runtime = FakeRuntime()
    assert _compile(runtime, events, make_request((), tmp_path)) == ()
    assert runtime.calls == [] and snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    [summary] = events[1].kv("c10.engine.compile.summary")
    assert (summary["engines_built"], summary["engines_reused"], summary["total"]) == (0, 0, 0)


# -- provenance ---------------------------------------------------------------------------------
def test_record_holds_what_the_engine_was_built_from(specs, tmp_path, events, corpus):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    record = read_record(results[0].entry.engine_path).record
    assert record is not None
    import hashlib

    assert record.onnx_sha256 == hashlib.sha256(corpus["dinov2_vpr"].read_bytes()).hexdigest()
    assert record.engine_sha256 == results[0].entry.sha256_hex
    assert record.engine_size == results[0].entry.engine_path.stat().st_size
    assert record.settings["precision"] == "fp16" and record.status == "built"
    assert record.backend == "FakeRuntime" and record.model_name == "dinov2_vpr"
    assert record.built_at and isinstance(record.build_duration_s, float)


def test_changed_onnx_bytes_rebuild_with_a_provenance_event(specs, tmp_path, events):
    models = tmp_path / "models"
    shutil.copytree(specs[0].onnx_path.parent, models)
    local = tuple(replace(s, onnx_path=models / s.onnx_path.name) for s in specs)
    _compile(FakeRuntime(), events, make_request(local, tmp_path / "cache"))
    with open(local[2].onnx_path, "ab") as handle:
        handle.write(b"\0")  # same name, other bytes
    events[1].records.clear()
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(local, tmp_path / "cache"))
    assert runtime.built == ["aliked"]
    [event] = events[1].kv("c10.engine.provenance.mismatch")
    assert event["model_name"] == "aliked" and "onnx_sha256" in event["changed"]


def test_changed_build_setting_rebuilds(specs, tmp_path, events):
    _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path, workspace_mb=1024))
    assert len(runtime.calls) == 3
    assert all("settings_fingerprint" in kv["changed"]
               for kv in events[1].kv("c10.engine.provenance.mismatch"))


def test_full_tensorrt_version_change_rebuilds_under_the_same_name(specs, tmp_path, events):
    _compile(FakeRuntime(), events, make_request(specs, tmp_path, host=replace(ORIN, trt_full="10.3.0")))
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path, host=replace(ORIN, trt_full="10.3.1")))
    assert len(runtime.calls) == 3
    assert all("backend_version" in kv["changed"]
               for kv in events[1].kv("c10.engine.provenance.mismatch"))


def test_engine_without_record_is_reused_with_a_warning_and_tracked(specs, tmp_path, events):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    record_path(results[0].entry.engine_path).unlink()
    events[1].records.clear()
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.calls == []
    [warning] = events[1].of("c10.engine.provenance.untracked")
    assert warning.levelno == logging.WARNING
    assert record_path(results[0].entry.engine_path).is_file()


def test_corrupt_record_is_a_warning_and_a_rebuild(specs, tmp_path, events):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    record_path(results[1].entry.engine_path).write_text("{not json")
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.built == ["lightglue"]
    assert json.loads(record_path(results[1].entry.engine_path).read_text())["schema"] == 1


def test_unchanged_onnx_is_not_reread_on_a_warm_boot(specs, tmp_path, events, monkeypatch):
    _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    import app.cache.record as record_mod

    hashed: list[Path] = []
    real = record_mod.hash_file
    monkeypatch.setattr(record_mod, "hash_file", lambda p: hashed.append(p) or real(p))
    _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    assert hashed == []
    _compile(FakeRuntime(), events, make_request(specs, tmp_path, strict_onnx_hash=True))
    assert len(hashed) == 3


def test_runtime_publishing_elsewhere_is_a_warning(specs, tmp_path, events):
    """A runtime that ignores build_config.engine_path would never be found again: say so."""
    class Elsewhere(FakeRuntime):
        def compile_engine(self, model_path, build_config):  # type: ignore[no-untyped-def]
            return super().compile_engine(model_path, replace(
                build_config, engine_path=tmp_path / "other" / "x.engine"))

    (tmp_path / "other").mkdir()
    _compile(Elsewhere(), events, make_request(specs[:1], tmp_path / "cache"))
    [warning] = events[1].of("c10.engine.path.mismatch")
    assert warning.levelno == logging.WARNING and "x.engine" in warning.getMessage()


def test_an_engine_of_another_size_is_rebuilt_without_being_hashed(specs, tmp_path, events,
                                                                    monkeypatch):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    engine = results[0].entry.engine_path
    with open(engine, "ab") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB that must not be read
    import app.cache.hashing as sidecar_mod

    hashed: list[Path] = []
    real = sidecar_mod.hash_file
    monkeypatch.setattr(sidecar_mod, "hash_file",
                        lambda p, early=None: hashed.append(p) or real(p, early))
    events[1].records.clear()
    runtime = FakeRuntime()
    _compile(runtime, events, make_request(specs, tmp_path))
    assert runtime.built == ["dinov2_vpr"] and engine not in hashed
    [event] = events[1].kv("c10.engine.sidecar.mismatch")
    assert event["reason"] == "size" and "8589934" in event["detail"]


@pytest.mark.parametrize("where", ["", ".sha256", ".record.json"])
def test_a_folder_under_an_artifacts_names_is_refused_before_any_work(specs, tmp_path, events,
                                                                     where):
    results = _compile(FakeRuntime(), events, make_request(specs, tmp_path))
    engine = results[2].entry.engine_path
    folder = engine.with_name(engine.name + where)
    if folder.exists():
        folder.unlink()
    folder.mkdir()
    (folder / "data.txt").write_text("mine")
    (results[0].entry.engine_path).write_bytes(b"damaged")  # would be rebuilt, if anything were
    before = snapshot(tmp_path)
    runtime = FakeRuntime()
    with pytest.raises(CacheWriteError, match="is a folder") as caught:
        _compile(runtime, events, make_request(specs, tmp_path))
    assert str(folder) in str(caught.value) and runtime.calls == []
    assert snapshot(tmp_path) == before


class FullRuntime(FakeRuntime):
    """A caller's runtime that implements the whole InferenceRuntime protocol."""

    name = "full"

    def version(self) -> str:
        return "9.9.9"

    def device_name(self) -> str:
        return "a device"

    def artifact_name(self, model_name, precision):  # type: ignore[no-untyped-def]
        return f"{model_name}.{precision.value}.bin"

    def precision_in_effect(self, model_path, artifact, build_config):  # type: ignore[no-untyped-def]
        return None  # its artifacts are opaque: the precision check is skipped

    def device_free_memory(self):  # type: ignore[no-untyped-def]
        return None

    def verify_artifact(self, artifact, model, build_config):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def open_runner(self, artifact, build_config):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def timing_cache_path(self, cache_root):  # type: ignore[no-untyped-def]
        return None

    def timing_cache_present(self, build_config):  # type: ignore[no-untyped-def]
        return None


def test_a_full_runtime_is_used_as_is_and_a_plain_one_adapted(specs, tmp_path, events):
    from app import InferenceRuntime
    from app.backends.base import PlainRuntimeAdapter, as_inference_runtime

    full = FullRuntime()
    assert as_inference_runtime(full, ORIN) is full and isinstance(full, InferenceRuntime)
    plain = FakeRuntime()
    adapted = as_inference_runtime(plain, replace(ORIN, trt_full="10.3.0.30", device_name="Orin"))
    assert isinstance(adapted, PlainRuntimeAdapter) and isinstance(adapted, InferenceRuntime)
    assert (adapted.name, adapted.version(), adapted.device_name()) == \
        ("FakeRuntime", "10.3.0.30", "Orin")
    [result] = _compile(full, events, make_request(specs[:1], tmp_path))
    assert result.entry.engine_path.name == "dinov2_vpr.fp16.bin"
    record = read_record(result.entry.engine_path).record
    assert record is not None
    assert (record.backend, record.backend_version, record.device_name) == \
        ("full", "9.9.9", "a device")
