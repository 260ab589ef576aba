"""The governor's readings on fake procfs/sysfs trees: values, absences, and planted files."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from app.governor import read_conditions, read_power_mode
from tests.governor.fake_host import GiB, orin, write_meminfo, write_nvpmodel, write_zone
from tests.helpers import within


def test_an_orin_like_host(tmp_path):
    c = read_conditions(orin(tmp_path, available=5 * GiB, cpu_c=52.5))
    assert c.memory is not None and c.memory.available == 5 * GiB and c.memory.swap_free == 2 * GiB
    assert c.memory.total == 8 * GiB
    assert c.power_mode == {"id": 2, "name": "MODE_15W", "source": "status"}
    assert [(z.type, z.temp_c, z.passive_c, z.critical_c) for z in c.zones] == [
        ("CPU-therm", 52.5, 99.0, 104.5), ("GPU-therm", 50.5, 99.0, None), ("PMIC-Die", 100.0, None, None)]
    event = c.as_event()
    assert event["mem_available_bytes"] == 5 * GiB and event["hottest_c"] == 100.0
    assert event["power_mode"] == {"id": 2, "name": "MODE_15W", "source": "status"}
    assert event["throttling"] == [] and len(event["thermal"]) == 3


def test_an_empty_root_reads_as_unknown(tmp_path):
    c = read_conditions(tmp_path)
    assert (c.memory, c.power_mode, c.zones) == (None, None, ())
    assert any("meminfo" in note for note in c.notes)
    assert c.as_event()["hottest_c"] is None


def test_power_mode_from_the_conf_default_without_a_status_file(tmp_path):
    write_nvpmodel(tmp_path, status=None, conf_default=0)
    # JetPack installs /etc/nvpmodel.conf as a link to the board's own file: it is followed.
    (tmp_path / "etc/nvpmodel.conf").rename(tmp_path / "etc/nvpmodel_p3767_0000.conf")
    (tmp_path / "etc/nvpmodel.conf").symlink_to("nvpmodel_p3767_0000.conf")
    mode = read_power_mode(tmp_path)
    assert mode == {"id": 0, "name": "MAXN", "source": "default"}


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "nvpmodel"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_nvpmodel_q_only_without_the_files(tmp_path):
    binary = _script(tmp_path, 'echo "NV Fan Mode:quiet"; echo "NV Power Mode: MAXN_SUPER"; echo 2')
    root = tmp_path / "root"
    root.mkdir()
    mode = read_power_mode(root, binary)
    assert mode == {"id": 2, "name": "MAXN_SUPER", "source": "nvpmodel -q"}
    write_nvpmodel(root)  # the files win: no process is started
    assert read_power_mode(root, str(tmp_path / "absent-binary"))["source"] == "status"  # type: ignore[index]


def test_a_hanging_nvpmodel_is_cut_off(tmp_path):
    binary = _script(tmp_path, "sleep 30")
    started = time.monotonic()
    assert read_power_mode(tmp_path / "nothing", binary, timeout_s=0.5) is None
    assert time.monotonic() - started < 5


def test_implausible_and_unreadable_temperatures_are_left_out(tmp_path):
    write_zone(tmp_path, 0, "CPU-therm", 40.0)
    zone = write_zone(tmp_path, 1, "BCPU-therm", -256.0)  # absent sensor
    write_zone(tmp_path, 2, "AO-therm", 30.0)
    (tmp_path / "sys/class/thermal/thermal_zone2/temp").write_text("garbage\n")
    c = read_conditions(tmp_path)
    assert [z.type for z in c.zones] == ["CPU-therm"]
    assert any("BCPU-therm" in n for n in c.notes) and any("AO-therm" in n for n in c.notes)
    assert zone.exists()


def test_fifos_planted_as_sysfs_and_procfs_files_do_not_hang(tmp_path):
    zone = write_zone(tmp_path, 0, "CPU-therm", 40.0)
    write_zone(tmp_path, 1, "GPU-therm", 41.0)
    (zone / "temp").unlink()
    os.mkfifo(zone / "temp")  # no writer: a blocking open would wait forever
    (tmp_path / "proc").mkdir()
    os.mkfifo(tmp_path / "proc" / "meminfo")
    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True)
    os.mkfifo(tmp_path / "var/lib/nvpmodel/status")
    c = within(5, lambda: read_conditions(tmp_path))
    assert [z.type for z in c.zones] == ["GPU-therm"] and c.memory is None and c.power_mode is None
    assert stat.S_ISFIFO(os.stat(zone / "temp").st_mode)  # left as it was


def test_device_links_and_huge_files_are_bounded(tmp_path):
    """(Every planted kind against the reader's governor mode: tests/cache/test_fsread.py.)"""
    zone = write_zone(tmp_path, 0, "CPU-therm", 40.0)
    write_zone(tmp_path, 1, "GPU-therm", 41.0)
    (zone / "temp").unlink()
    (zone / "temp").symlink_to("/dev/zero")  # a character device: never opened
    write_meminfo(tmp_path, 1 * GiB)
    with open(tmp_path / "proc/meminfo", "ab") as handle:
        handle.truncate(8 << 30)  # 8 GiB of holes after the real lines: 16 KiB are read
    c = within(5, lambda: read_conditions(tmp_path))
    assert [z.type for z in c.zones] == ["GPU-therm"] and c.memory is not None
    assert c.memory.available == 1 * GiB
    (tmp_path / "proc/meminfo").write_text("MemTotal: 10 kB\n")  # no MemAvailable: unknown
    assert read_conditions(tmp_path).memory is None
