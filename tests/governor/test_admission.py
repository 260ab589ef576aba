"""The governor's decisions on fake hosts: memory clamp and refusal, heat, throttling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.cancel import CANCEL
from app.cli import exit_code_for
from app.config_sections import GovernorConfig
from app.errors import BuildCancelledError, BuildConditionsError
from app.governor import read_conditions
from app.governor.admission import govern_build
from tests.governor.fake_host import GiB, MiB, orin, set_temp, write_zone
from tests.helpers import real_gpu_available


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    with open(path, "wb") as handle:
        handle.truncate(100 * MiB)  # only its size matters here
    return path


def _settings(root: Path, **kw) -> GovernorConfig:
    return GovernorConfig(root=root, **kw)


class FakeClock:
    """Time that advances only when the governor sleeps; ``on_sleep`` may change the tree."""

    def __init__(self, on_sleep=None) -> None:
        self.now, self.sleeps, self.on_sleep = 0.0, [], on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def test_conditions_event_and_a_plain_admission(tmp_path, model, events):
    root = orin(tmp_path / "host")
    logger, log = events
    admission = govern_build("aliked", model, 1024, _settings(root), logger)
    assert (admission.workspace_mb, admission.clamped, admission.waited_s) == (1024, False, 0.0)
    [event] = log.kv("c10.build.conditions")
    assert event["model_name"] == "aliked" and event["mem_available_bytes"] == 6 * GiB
    assert event["power_mode"]["name"] == "MODE_15W" and event["hottest_c"] == 100.0
    assert log.of("c10.build.workspace.clamped") == [] and log.of("c10.build.thermal.wait") == []
    assert "power mode MODE_15W (2)" in log.of("c10.build.conditions")[0].getMessage()


def test_low_memory_clamps_the_workspace_with_a_warning(tmp_path, model, events):
    root = orin(tmp_path / "host", available=2 * GiB)
    logger, log = events
    admission = govern_build("aliked", model, 4096, _settings(root), logger)
    assert (admission.workspace_mb, admission.clamped) == (1024, True)
    [record] = log.of("c10.build.workspace.clamped")
    assert record.levelname == "WARNING"
    assert "workspace 4096 MiB asked" in record.getMessage() and "2048 MiB" in record.getMessage()
    assert record.kv["clamped_mb"] == 1024 and record.kv["mem_available_bytes"] == 2 * GiB  # type: ignore[attr-defined]


def test_a_build_that_cannot_fit_is_refused(tmp_path, model, events):
    root = orin(tmp_path / "host", available=300 * MiB)
    (root / "proc/meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 307200 kB\nSwapFree: 0 kB\n")
    with pytest.raises(BuildConditionsError) as caught:
        govern_build("dinov2_vpr", model, 1024, _settings(root), events[0])
    message = str(caught.value)
    assert message.startswith("dinov2_vpr: not enough memory to build: 300 MiB available")
    assert "needs about 812 MiB" in message and "100 MiB" in message and "swap" in caught.value.hint
    assert "300 MiB available and no swap," in message  # a host without swap: not "0 MiB free"
    assert exit_code_for(caught.value) == 69


def test_swap_makes_a_build_possible_but_does_not_grow_the_workspace(tmp_path, model, events):
    root = orin(tmp_path / "host")
    (root / "proc/meminfo").write_text(
        "MemTotal: 8000000 kB\nMemAvailable: 512000 kB\nSwapTotal: 4194304 kB\nSwapFree: 4194304 kB\n")
    logger, log = events
    admission = govern_build("m", model, 4096, _settings(root), logger)
    assert admission.workspace_mb == 250  # half of the 500 MiB available, not of RAM + swap
    assert "500 MiB available, 4096 MiB swap free" in log.of("c10.build.conditions")[0].getMessage()
    with pytest.raises(BuildConditionsError, match="under the 300 MiB minimum"):
        govern_build("m", model, 4096, _settings(root, min_workspace_mb=300), events[0])


def test_a_host_without_swap_says_so(tmp_path, model, events):
    root = orin(tmp_path / "host")
    (root / "proc/meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 6291456 kB\n"
                                        "SwapTotal: 0 kB\nSwapFree: 0 kB\n")
    logger, log = events
    govern_build("m", model, 1024, _settings(root), logger)
    said = log.of("c10.build.conditions")[0].getMessage()
    assert "6144 MiB available, no swap" in said and "MiB swap free" not in said, said


def test_a_discrete_gpu_bounds_the_workspace_by_its_free_memory(tmp_path, model, events):
    root = orin(tmp_path / "host", available=6 * GiB)
    logger, log = events
    admission = govern_build("m", model, 4096, _settings(root), logger, device_free=1 * GiB)
    assert (admission.workspace_mb, admission.clamped) == (512, True)
    assert "1024 MiB of GPU memory available" in log.of("c10.build.workspace.clamped")[0].getMessage()


@pytest.mark.gpu
@pytest.mark.skipif(not real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_discrete_gpu_bounds_the_workspace_by_its_free_memory(tmp_path, model, events):
    """On a real discrete GPU, through the TensorRT backend's device_free_memory (cuda-python's
    cudaMemGetInfo after cudaSetDevice; TensorRT itself is not needed for it): a workspace
    larger than the GPU is clamped to memory_share of what is free on it, not of host memory."""
    from app.backends.tensorrt.runtime import TensorRTRuntime
    from app.host.probe import probe_host

    runtime = TensorRTRuntime(probe_host(need_gpu=True).capabilities, trt_module=object())
    free = runtime.device_free_memory()
    assert free is not None and free > 1 * GiB
    logger, log = events
    admission = govern_build("m", model, 10_000_000, _settings(orin(tmp_path / "host")), logger,
                             device_free=free)
    print(f"{free} bytes free on the GPU: workspace {admission.workspace_mb} MiB")
    assert admission.clamped and admission.workspace_mb == int(0.5 * free) // MiB
    assert log.kv("c10.build.workspace.clamped")[0]["device_free_bytes"] == free


def test_no_workspace_asked_still_checks_the_fit(tmp_path, model, events):
    root = orin(tmp_path / "host")
    assert govern_build("m", model, None, _settings(root), events[0]).workspace_mb is None
    (root / "proc/meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 1024 kB\n")
    with pytest.raises(BuildConditionsError):
        govern_build("m", model, None, _settings(root), events[0])


def test_unknown_memory_decides_nothing(tmp_path, model, events):
    root = orin(tmp_path / "host")
    (root / "proc/meminfo").unlink()
    assert govern_build("m", model, 4096, _settings(root), events[0]).workspace_mb == 4096


def test_a_throttling_soc_is_said_so(tmp_path, model, events):
    root = orin(tmp_path / "host")
    write_zone(root, 3, "tj-therm", 96.0, (("passive", 95.0),))
    logger, log = events
    govern_build("m", model, 1024, _settings(root, max_temp_c=100.0), logger)
    [record] = log.of("c10.build.throttling")
    assert record.levelname == "WARNING" and "tj-therm 96.0 °C past its 95 °C trip" in record.getMessage()


def test_a_hot_zone_waits_until_it_cools(tmp_path, model, events):
    root = orin(tmp_path / "host", cpu_c=90.0)
    zones = [root / f"sys/class/thermal/thermal_zone{i}" for i in (0, 1)]

    def cool(n: int) -> None:
        set_temp(zones[0], 70.0 if n >= 2 else 90.0)
        set_temp(zones[1], 70.0 if n >= 3 else 88.0)

    clock = FakeClock(on_sleep=cool)
    logger, log = events
    admission = govern_build("m", model, 1024, _settings(root, poll_s=5.0), logger,
                             sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [5.0, 5.0, 5.0] and admission.waited_s == 15.0
    [wait] = log.kv("c10.build.thermal.wait")
    assert wait["zones"] == {"CPU-therm": 90.0, "GPU-therm": 88.0} and wait["max_temp_c"] == 85.0
    [done] = log.kv("c10.build.thermal.done")
    assert done["outcome"] == "cooled" and done["waited_s"] == 15.0
    assert admission.conditions.zones[0].temp_c == 70.0  # admitted on the fresh reading


@pytest.mark.parametrize("when_hot", ["proceed", "refuse"])
def test_a_zone_that_stays_hot_is_bounded(tmp_path, model, events, when_hot):
    root = orin(tmp_path / "host", cpu_c=95.0)
    clock = FakeClock()
    logger, log = events
    settings = _settings(root, thermal_wait_s=60.0, poll_s=25.0, when_hot=when_hot)
    if when_hot == "refuse":
        with pytest.raises(BuildConditionsError, match=r"stayed at or above governor\.max_temp_c 85"):
            govern_build("m", model, 1024, settings, logger, sleep=clock.sleep, clock=clock)
    else:
        admission = govern_build("m", model, 1024, settings, logger, sleep=clock.sleep, clock=clock)
        assert admission.waited_s == 60.0
    assert clock.sleeps == [25.0, 25.0, 10.0]  # never past thermal_wait_s
    [done] = log.kv("c10.build.thermal.done")
    assert done["outcome"] == ("refused" if when_hot == "refuse" else "timeout")


def test_ignored_zones_do_not_hold_a_build(tmp_path, model, events):
    root = orin(tmp_path / "host")  # PMIC-Die reads a fixed 100 °C
    logger = events[0]
    assert govern_build("m", model, 1024, _settings(root), logger).waited_s == 0.0
    with pytest.raises(BuildConditionsError):
        govern_build("m", model, 1024, _settings(root, ignore_zones=(), thermal_wait_s=0.0,
                                                    when_hot="refuse"), logger)


def test_a_thermal_wait_is_cancelled_promptly(tmp_path, model, events):
    """Real time and the real cancellable sleep: SIGTERM's flag ends the wait at once."""
    root = orin(tmp_path / "host", cpu_c=95.0)
    timer = threading.Timer(0.3, CANCEL.set)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(BuildCancelledError):
            govern_build("m", model, 1024, _settings(root, thermal_wait_s=30.0, poll_s=5.0), events[0])
    finally:
        timer.cancel()
        CANCEL.clear()
    assert time.monotonic() - started < 3.0


def test_real_time_wait_reads_the_tree_again(tmp_path, model, events):
    root = orin(tmp_path / "host", cpu_c=90.0)
    cpu = root / "sys/class/thermal/thermal_zone0"
    gpu = root / "sys/class/thermal/thermal_zone1"
    threading.Timer(0.3, lambda: (set_temp(cpu, 60.0), set_temp(gpu, 60.0))).start()
    admission = govern_build("m", model, 1024, _settings(root, thermal_wait_s=10.0, poll_s=0.1),
                             events[0])
    assert 0.2 < admission.waited_s < 5.0
    assert max(z.temp_c for z in read_conditions(root).zones if z.type != "PMIC-Die") == 60.0
