"""ETA from earlier builds of the same model on the same SKU, and what is left per model."""

from __future__ import annotations

from app.governor.eta import PastBuild, estimate, past_build, remaining

ORIN_NX = "orin-nx-16gb|trt10.3.0.30"


def test_no_history_is_no_estimate():
    e = estimate("aliked", ORIN_NX, True, [])
    assert e.seconds is None and e.basis.startswith("no estimate")
    other_sku = [PastBuild("aliked", "agx-orin-64gb|trt10.3.0.30", 100.0, True)]
    assert estimate("aliked", ORIN_NX, True, other_sku).seconds is None


def test_median_of_recent_builds_in_the_same_cache_state():
    history = [PastBuild("aliked", ORIN_NX, s, False) for s in (600, 580, 620)]
    history += [PastBuild("aliked", ORIN_NX, s, True) for s in (900, 60, 70, 65, 75, 80)]
    cold = estimate("aliked", ORIN_NX, False, history)
    assert (cold.seconds, cold.builds) == (600.0, 3)
    warm = estimate("aliked", ORIN_NX, True, history)
    assert warm.seconds == 70.0 and warm.builds == 5  # the old 900 s build is no longer counted
    unknown_state = estimate("aliked", ORIN_NX, None, history)
    assert unknown_state.seconds is not None and "different timing-cache state" in unknown_state.basis


def test_remaining_per_model_in_the_config_order():
    history = [PastBuild("dinov2_vpr", ORIN_NX, 120.0), PastBuild("lightglue", ORIN_NX, 300.0),
               PastBuild("aliked", ORIN_NX, 60.0)]
    plan = remaining(["dinov2_vpr", "lightglue", "aliked"], ORIN_NX, history)
    assert [(r.model_name, r.position, r.models_left, r.left_s) for r in plan] == [
        ("dinov2_vpr", 1, 3, 480.0), ("lightglue", 2, 2, 360.0), ("aliked", 3, 1, 60.0)]
    assert plan[0].describe() == "3 models left, about 8 min 00 s"
    assert plan[2].describe() == "1 model left, about 60 s"
    event = plan[1].as_event()
    assert event == {"model_name": "lightglue", "position": 2, "total": 3, "models_left": 2,
                     "eta_s": 360.0, "this_eta_s": 300.0, "basis": "median of 1 earlier build",
                     "no_estimate_for": []}


def test_a_model_never_built_here_leaves_no_total_until_it_is_done():
    history = [PastBuild("dinov2_vpr", ORIN_NX, 120.0), PastBuild("aliked", ORIN_NX, 4000.0)]
    plan = remaining(["dinov2_vpr", "lightglue", "aliked"], ORIN_NX, history,
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
    history = [b for r in records if (b := past_build(r, ORIN_NX)) is not None]
    assert history == [PastBuild("aliked", ORIN_NX, 61.5, None), PastBuild("aliked", ORIN_NX, 30.0, True)]


def test_the_countdown_of_a_build_in_progress():
    history = [PastBuild("lightglue", ORIN_NX, 300.0), PastBuild("aliked", ORIN_NX, 60.0)]
    now = remaining(["lightglue", "aliked"], ORIN_NX, history)[0]
    assert [now.countdown(s) for s in (0.0, 100.0, 300.0, 900.0)] == [360.0, 260.0, 60.0, 60.0]
    unknown = remaining(["lightglue", "dinov2_vpr"], ORIN_NX, history)[0]
    assert unknown.countdown(10.0) is None


def test_a_duration_no_build_takes_is_no_history():
    for duration in (float("inf"), float("nan"), -1.0, 0.0, 1e300, True):
        assert past_build({"model_name": "aliked", "build_duration_s": duration}, ORIN_NX) is None


def test_an_eta_that_is_not_finite_is_shown_as_none_never_raised():
    """Whatever reaches it, the ETA's rounding never raises (round(inf) would)."""
    for seconds in (float("inf"), float("nan")):
        [left] = remaining(["aliked"], ORIN_NX, [PastBuild("aliked", ORIN_NX, seconds, None)])
        assert left.describe() == "1 model left, no estimate"
        assert left.as_event()["eta_s"] is None and left.as_event()["this_eta_s"] is None
