"""The ETA (app.governor.eta): estimates from earlier builds of the same model on the same SKU,
what is left per model, and the history in the provenance records: what a record keeps across
rebuilds, which records count, and the ETA a build's progress events carry. Real record files."""

from __future__ import annotations

import dataclasses
import time

from app.cache.record import BUILDING, ProvenanceRecord, write_record
from app.governor.eta import PastBuild, Timeline, estimate, past_build, remaining
from app.values import BuildConfig, PrecisionMode


def test_no_history_is_no_estimate():
    seconds, basis = estimate("aliked", True, [])
    assert seconds is None and basis.startswith("no estimate")
    # Another SKU's builds never reach it: the timeline tests below.
    assert estimate("aliked", True, [PastBuild("lightglue", 100.0, True)])[0] is None


def test_median_of_recent_builds_in_the_same_cache_state():
    history = [PastBuild("aliked", s, False) for s in (600, 580, 620)]
    history += [PastBuild("aliked", s, True) for s in (900, 60, 70, 65, 75, 80)]
    assert estimate("aliked", False, history) == (600.0, "median of 3 earlier builds")
    # The old 900 s build is no longer counted.
    assert estimate("aliked", True, history) == (70.0, "median of 5 earlier builds")
    seconds, basis = estimate("aliked", None, history)
    assert seconds is not None and "different timing-cache state" in basis


def test_remaining_per_model_in_the_config_order():
    history = [PastBuild("dinov2_vpr", 120.0), PastBuild("lightglue", 300.0),
               PastBuild("aliked", 60.0)]
    plan = remaining(["dinov2_vpr", "lightglue", "aliked"], history)
    assert [(r.model_name, r.position, r.models_left, r.left_s) for r in plan] == [
        ("dinov2_vpr", 1, 3, 480.0), ("lightglue", 2, 2, 360.0), ("aliked", 3, 1, 60.0)]
    assert plan[0].describe() == "3 models left, about 8 min 00 s"
    assert plan[2].describe() == "1 model left, about 60 s"
    event = plan[1].as_event()
    assert event == {"model_name": "lightglue", "position": 2, "total": 3, "models_left": 2,
                     "eta_s": 360.0, "this_eta_s": 300.0, "basis": "median of 1 earlier build",
                     "no_estimate_for": []}


def test_a_model_never_built_here_leaves_no_total_until_it_is_done():
    history = [PastBuild("dinov2_vpr", 120.0), PastBuild("aliked", 4000.0)]
    plan = remaining(["dinov2_vpr", "lightglue", "aliked"], history,
                     timing_cache={"aliked": False})
    assert [r.left_s for r in plan] == [None, None, 4000.0]
    assert plan[0].unknown == ("lightglue",)
    assert plan[0].describe() == "3 models left, no estimate (lightglue never built on this SKU)"
    assert plan[2].describe() == "1 model left, about 1 h 06 min"


def test_history_from_provenance_records():
    records = [
        {"model_name": "aliked", "build_duration_s": 61.5, "device_name": "Orin"},
        {"model_name": "aliked", "build_duration_s": None},  # reused: no build
        {"model_name": "aliked", "build_duration_s": 30.0, "timing_cache": True},
        {"build_duration_s": 10.0},
        {"model_name": "x", "build_duration_s": "fast"},
    ]
    history = [b for r in records if (b := past_build(r)) is not None]
    assert history == [PastBuild("aliked", 61.5, None), PastBuild("aliked", 30.0, True)]


def test_the_countdown_of_a_build_in_progress():
    history = [PastBuild("lightglue", 300.0), PastBuild("aliked", 60.0)]
    now = remaining(["lightglue", "aliked"], history)[0]
    assert [now.countdown(s) for s in (0.0, 100.0, 300.0, 900.0)] == [360.0, 260.0, 60.0, 60.0]
    unknown = remaining(["lightglue", "dinov2_vpr"], history)[0]
    assert unknown.countdown(10.0) is None


def test_a_duration_no_build_takes_is_no_history():
    for duration in (float("inf"), float("nan"), -1.0, 0.0, 1e300, True):
        assert past_build({"model_name": "aliked", "build_duration_s": duration}) is None


def test_an_eta_that_is_not_finite_is_shown_as_none_never_raised():
    """Whatever reaches it, the ETA's rounding never raises (round(inf) would)."""
    for seconds in (float("inf"), float("nan")):
        [left] = remaining(["aliked"], [PastBuild("aliked", seconds, None)])
        assert left.describe() == "1 model left, no estimate"
        assert left.as_event()["eta_s"] is None and left.as_event()["this_eta_s"] is None


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
