"""The build governor through `engine-init run`: real builds, a fake procfs/sysfs tree
(governor.root) because this machine's memory and temperatures cannot be set by a test."""

from __future__ import annotations

from app.cache.record import read_record
from tests.backends.tensorrt.helpers import start_job, write_job, write_standin_site
from tests.governor.fake_host import GiB, MiB, write_meminfo, write_zone
from tests.helpers import cli, json_events, write_job_config


def _kinds(proc, kind):
    return [e["kv"] for e in json_events(proc.stderr) if e["kind"] == kind]


def test_conditions_event_and_clamp_and_no_rebuild_next_boot(tmp_path, corpus):
    fake = tmp_path / "host"
    write_meminfo(fake, available=1 * GiB, swap_free=0)
    write_zone(fake, 0, "CPU-therm", 45.0)
    job = write_job_config(tmp_path, corpus, workspace_mb=4096, governor={"root": str(fake)})
    cold = cli("--config", str(job), "--log-format", "json", "run")
    assert cold.returncode == 0, cold.stderr
    conditions = _kinds(cold, "c10.build.conditions")
    assert [c["model_name"] for c in conditions] == ["dinov2_vpr", "lightglue", "aliked"]
    clamped = _kinds(cold, "c10.build.workspace.clamped")
    assert len(clamped) == 3 and clamped[0]["workspace_mb"] == 4096
    assert clamped[0]["clamped_mb"] == 512  # 0.5 of 1 GiB available
    # The clamp is not a setting: the next boot reuses every engine.
    warm = cli("--config", str(job), "--log-format", "json", "run")
    assert warm.returncode == 0, warm.stderr
    assert len(_kinds(warm, "c10.engine.cache.hit")) == 3
    assert _kinds(warm, "c10.build.conditions") == []


def test_too_little_memory_refuses_with_exit_69_and_builds_nothing(tmp_path, corpus):
    fake = tmp_path / "host"
    write_meminfo(fake, available=300 * MiB, swap_free=0)
    job = write_job_config(tmp_path, corpus, governor={"root": str(fake)})
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 69, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("engine-init: error:")]
    assert len(error) == 1 and "dinov2_vpr: not enough memory to build: 300 MiB" in error[0]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "cache").glob("dinov2_vpr*"))
    assert not (tmp_path / "run" / "ready.json").exists()


def test_a_hot_zone_past_the_wait_refuses_when_told_to(tmp_path, corpus):
    fake = tmp_path / "host"
    write_meminfo(fake, available=4 * GiB)
    write_zone(fake, 0, "GPU-therm", 95.0)
    job = write_job_config(tmp_path, corpus, governor={
        "root": str(fake), "thermal_wait_s": 0.3, "poll_s": 0.1, "when_hot": "refuse"})
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 69, proc.stderr
    assert _kinds(proc, "c10.build.thermal.wait")[0]["zones"] == {"GPU-therm": 95.0}
    assert "governor.max_temp_c" in proc.stderr


def test_governor_disabled_reads_nothing(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus, governor={"enabled": False})
    proc = cli("--config", str(job), "--log-format", "json", "run")
    assert proc.returncode == 0, proc.stderr
    assert _kinds(proc, "c10.build.conditions") == []
    assert _kinds(proc, "c10.build.eta") == []
    # The history is kept all the same, for when the governor is on again.
    engine = next((tmp_path / "cache").glob("aliked__*.ort"))
    record = read_record(engine).record
    assert record is not None and record.build_duration_s is not None


def test_eta_first_build_has_no_estimate_and_a_rebuild_estimates_from_it(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    cold = cli("--config", str(job), "--log-format", "json", "run")
    assert cold.returncode == 0, cold.stderr
    etas = _kinds(cold, "c10.build.eta")
    assert [(e["model_name"], e["position"], e["models_left"], e["eta_s"]) for e in etas] == [
        ("dinov2_vpr", 1, 3, None), ("lightglue", 2, 2, None), ("aliked", 3, 1, None)]
    assert etas[0]["no_estimate_for"] == ["dinov2_vpr", "lightglue", "aliked"]
    no_estimate = [e["msg"] for e in json_events(cold.stderr) if e["kind"] == "c10.build.eta"]
    assert no_estimate[2] == "aliked: 1 model left, no estimate (aliked never built on this SKU)"
    engine = next((tmp_path / "cache").glob("aliked__*.ort"))
    first = read_record(engine).record
    assert first is not None and first.build_duration_s is not None

    engine.unlink()  # the record stays: the next build is estimated from it
    again = cli("--config", str(job), "--log-format", "json", "run")
    assert again.returncode == 0, again.stderr
    [eta] = _kinds(again, "c10.build.eta")
    assert (eta["model_name"], eta["position"], eta["total"], eta["models_left"]) == (
        "aliked", 1, 1, 1)
    assert eta["this_eta_s"] == eta["eta_s"] == round(first.build_duration_s, 1)
    assert eta["basis"] == "median of 1 earlier build" and eta["no_estimate_for"] == []
    # The rebuilt engine's record keeps the first build as history.
    second = read_record(engine).record
    assert second is not None
    assert second.past_builds == [{"build_duration_s": first.build_duration_s,
                                   "timing_cache": None}]


def test_the_progress_events_of_a_tensorrt_stand_in_build_carry_the_eta(tmp_path, corpus):
    """TensorRT's progress monitor through the stand-in (FakeTensorRT 10.3 as the `tensorrt`
    package of a real process): the second build's progress events count down from the first
    build's duration; the first build's carry no estimate."""
    site = write_standin_site(tmp_path / "site", "10.3.0")
    job = write_job(tmp_path, corpus["aliked"])
    cold = start_job(job, site, L4T_VERSION="36.4.3", FAKE_TRT_STEP_S="0.002")
    _, stderr = cold.communicate(timeout=60)
    assert cold.returncode == 0, stderr[-2000:]
    progress = [e["kv"] for e in json_events(stderr) if e["kind"] == "c10.engine.compile.progress"]
    assert progress and all(p["eta_s"] is None and p["models_left"] == 1 for p in progress)
    [eta] = [e["kv"] for e in json_events(stderr) if e["kind"] == "c10.build.eta"]
    assert eta["timing_cache"] is False  # none on disk before the first build
    engine = next((tmp_path / "cache").glob("aliked__*.engine"))
    duration = read_record(engine).record.build_duration_s  # type: ignore[union-attr]

    engine.unlink()
    again = start_job(job, site, L4T_VERSION="36.4.3", FAKE_TRT_STEP_S="0.002")
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 0, stderr[-2000:]
    [eta] = [e["kv"] for e in json_events(stderr) if e["kind"] == "c10.build.eta"]
    # The first build wrote the timing cache: this one finds it, and says its estimate comes
    # from a build made without one.
    assert eta["timing_cache"] is True and "different timing-cache state" in eta["basis"]
    assert eta["eta_s"] == round(duration, 1)
    progress = [e["kv"] for e in json_events(stderr) if e["kind"] == "c10.engine.compile.progress"]
    left = [p["eta_s"] for p in progress]
    assert len(left) >= 2 and all(isinstance(s, float) for s in left)
    assert left == sorted(left, reverse=True) and left[0] <= round(duration, 1)


def test_a_discrete_gpu_clamps_the_workspace_to_its_free_memory(tmp_path, corpus):
    """TensorRT stand-in (FakeTensorRT 10.3 with FakeCudart as cuda-python's runtime, in a real
    process) on a discrete GPU with 1 GiB free and 32 GiB of host memory: the workspace is
    bounded by the GPU's free memory, not the host's; on an integrated GPU (a Jetson), by the
    host's MemAvailable."""
    fake = tmp_path / "host"
    write_meminfo(fake, available=32 * GiB, swap_free=0)
    site = write_standin_site(tmp_path / "site", "10.3.0")
    job = write_job(tmp_path, corpus["aliked"])
    job.write_text(job.read_text() + f"workspace_mb: 4096\ngovernor:\n  root: {fake}\n")
    proc = start_job(job, site, L4T_VERSION="36.4.3", FAKE_CUDA_DISCRETE_FREE=str(1 * GiB))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    [clamped] = [e["kv"] for e in json_events(stderr) if e["kind"] == "c10.build.workspace.clamped"]
    assert clamped["device_free_bytes"] == 1 * GiB and clamped["clamped_mb"] == 512

    (tmp_path / "cache").rename(tmp_path / "first-cache")
    integrated = start_job(job, site, L4T_VERSION="36.4.3")
    _, stderr = integrated.communicate(timeout=60)
    assert integrated.returncode == 0, stderr[-2000:]
    assert [e for e in json_events(stderr) if e["kind"] == "c10.build.workspace.clamped"] == []
