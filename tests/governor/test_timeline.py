"""The ETA's history in the provenance records (app.governor.timeline): what a record keeps across
rebuilds, which records count, and the ETA a build's progress events carry. Real record files."""

from __future__ import annotations

import dataclasses
import time

from app.cache.record import BUILDING, ProvenanceRecord, write_record
from app.governor.timeline import Timeline
from app.values import BuildConfig, PrecisionMode

SKU = {"backend": "tensorrt", "backend_version": "10.3.0.30", "sm_count": 8}


def _expected(**changes):
    base = ProvenanceRecord.build(model_name="aliked", settings={"precision": "int8"},
                                  backend="tensorrt", backend_version="10.3.0.30",
                                  device_name="Orin", sku=SKU)
    return dataclasses.replace(base, **changes)


def _stored(tmp_path, **changes):
    artifact = tmp_path / "aliked.engine"
    write_record(artifact, _expected(**changes))
    return artifact


class TimingCacheRuntime:
    """The one member of a runtime the timeline asks: whether a timing cache is on disk (True,
    False), or whether the backend keeps none (None, ONNX Runtime)."""

    def __init__(self, present: bool | None) -> None:
        self.present = present

    def timing_cache_present(self, build_config: BuildConfig) -> bool | None:
        return self.present


def test_a_rebuild_keeps_the_last_builds_and_the_stored_ones_own(tmp_path):
    past = [{"build_duration_s": float(s), "timing_cache": True} for s in (10, 20, 30, 40)]
    artifact = _stored(tmp_path, build_duration_s=50.0, timing_cache=False, past_builds=past)
    timeline = Timeline([("aliked", artifact, _expected())], None)
    assert [b.duration_s for b in timeline.history["aliked"]] == [10, 20, 30, 40, 50]
    timeline.start("aliked", TimingCacheRuntime(True), BuildConfig(PrecisionMode.INT8))
    noted = timeline.noted("aliked")
    assert noted["timing_cache"] is True  # the state this build starts in
    assert noted["past_builds"] == [*past[1:], {"build_duration_s": 50.0, "timing_cache": False}]


def test_a_killed_builds_pending_record_keeps_the_history_but_adds_nothing(tmp_path):
    past = [{"build_duration_s": 12.0, "timing_cache": None}, {"bad": "entry"}]
    artifact = _stored(tmp_path, status=BUILDING, past_builds=past)
    timeline = Timeline([("aliked", artifact, _expected())], None)
    assert [b.duration_s for b in timeline.history["aliked"]] == [12.0]


def test_records_of_another_sku_or_backend_release_are_no_history(tmp_path):
    for other in ({"sku": {**SKU, "sm_count": 16}}, {"backend_version": "10.3.0.31"}):
        artifact = _stored(tmp_path, build_duration_s=50.0, **other)
        assert Timeline([("aliked", artifact, _expected())], None).history["aliked"] == []
    assert Timeline([("aliked", tmp_path / "none.engine", _expected())], None).history == {
        "aliked": []}


def test_the_eta_event_and_the_countdown_in_progress_fields(tmp_path, events):
    logger, log = events
    artifact = _stored(tmp_path, build_duration_s=4.0, timing_cache=False)
    timeline = Timeline([("aliked", artifact, _expected()),
                         ("lightglue", tmp_path / "lightglue.engine", _expected())], logger)
    config = timeline.start("aliked", TimingCacheRuntime(False), BuildConfig(PrecisionMode.INT8))
    [eta] = log.kv("c10.build.eta")
    assert (eta["models_left"], eta["this_eta_s"], eta["eta_s"]) == (2, 4.0, None)
    assert eta["no_estimate_for"] == ["lightglue"] and eta["timing_cache"] is False
    assert config.progress_fields is not None
    assert config.progress_fields() == {"eta_s": None, "models_left": 2}

    log.records.clear()
    alone = Timeline([("aliked", artifact, _expected())], logger)
    config = alone.start("aliked", TimingCacheRuntime(False), BuildConfig(PrecisionMode.INT8))
    assert log.of("c10.build.eta")[0].getMessage() == "aliked: 1 model left, about 4 s"
    assert config.progress_fields is not None
    first = config.progress_fields()
    time.sleep(0.2)
    later = config.progress_fields()
    assert first["eta_s"] is not None and later["eta_s"] is not None
    assert 3.5 <= later["eta_s"] < first["eta_s"] <= 4.0


def test_with_the_governor_off_history_is_kept_and_progress_carries_no_eta(tmp_path):
    artifact = _stored(tmp_path, build_duration_s=4.0)
    timeline = Timeline([("aliked", artifact, _expected())], None)
    config = timeline.start("aliked", TimingCacheRuntime(None), BuildConfig(PrecisionMode.INT8))
    assert config.progress_fields is None
    assert timeline.noted("aliked") == {"timing_cache": None, "past_builds": [
        {"build_duration_s": 4.0, "timing_cache": None}]}
