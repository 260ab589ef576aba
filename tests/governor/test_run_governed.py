"""The build governor through `engine-init run`: real builds, a fake procfs/sysfs tree
(governor.root) because this machine's memory and temperatures cannot be set by a test."""

from __future__ import annotations

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
