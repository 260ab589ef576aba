"""L4T release parsing on real-format lines, the JetPack table, and garbage; the TensorRT
version read without importing TensorRT, two installs flagged."""

from __future__ import annotations

import sys

import pytest

from app.host.probe import detect_release, find_tensorrt, jetpack_for, parse_nv_tegra_release

LINES = {
    # Real first lines of /etc/nv_tegra_release, one per supported release family.
    "35.4.1": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
              "DATE: Tue Aug  1 19:57:35 UTC 2023",
    "35.6.0": "# R35 (release), REVISION: 6.0, GCID: 37386963, BOARD: generic, EABI: aarch64, "
              "DATE: Wed Aug 14 21:41:12 UTC 2024",
    "36.3.0": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
              "DATE: Mon May  6 17:34:21 UTC 2024",
    "36.4.3": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
              "DATE: Wed Jan  8 01:49:37 UTC 2025",
    "36.4.4": "# R36 (release), REVISION: 4.4, GCID: 41062509, BOARD: generic, EABI: aarch64, "
              "DATE: Mon Jun 16 16:07:13 UTC 2025",
    "38.2.0": "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, "
              "DATE: Fri Aug 22 00:55:42 UTC 2025",
}
EXPECTED = {"35.4.1": "5.1.2", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.3": "6.2",
            "36.4.4": "6.2.1", "38.2.0": "7.0"}


@pytest.mark.parametrize("l4t", sorted(LINES))
def test_real_release_lines(tmp_path, l4t):
    assert parse_nv_tegra_release(LINES[l4t] + "\n# KERNEL_VARIANT: oot\n") == l4t
    release_file = tmp_path / "nv_tegra_release"
    release_file.write_text(LINES[l4t] + "\n")
    release = detect_release({}, release_file)
    assert (release.l4t, release.jetpack, release.known) == (l4t, EXPECTED[l4t], True)


@pytest.mark.parametrize("garbage", ["hello", "R36 (release)", "# R36 (beta), REVISION: 4.3",
                                     "# Rxx (release), REVISION: 4.3", "\x00\xff",
                                     "# R36 (release), REVISION: four"])
def test_garbage_is_refused_not_guessed(tmp_path, garbage):
    assert parse_nv_tegra_release(garbage) is None
    release_file = tmp_path / "nv_tegra_release"
    release_file.write_text(garbage)
    with pytest.raises(ValueError):
        detect_release({}, release_file)


def test_unknown_release_keeps_its_identity():
    assert jetpack_for("36.9.0") == ("l4t36.9.0", False)


def test_env_overrides_the_file_and_absence_means_not_a_jetson(tmp_path):
    assert detect_release({"L4T_VERSION": "36.4.3"}, tmp_path / "none").jetpack == "6.2"
    assert detect_release({"L4T_VERSION": "R35.4.1"}, tmp_path / "none").jetpack == "5.1.2"
    off = detect_release({}, tmp_path / "none")
    assert (off.l4t, off.jetpack) == ("", "none")
    (tmp_path / "empty").write_text("")
    assert detect_release({}, tmp_path / "empty").jetpack == "none"  # /dev/null mounted off-Jetson
    assert parse_nv_tegra_release("") is None
    with pytest.raises(ValueError, match="L4T_VERSION"):
        detect_release({"L4T_VERSION": "latest"}, tmp_path / "none")


def test_a_fifo_as_the_release_file_is_not_a_jetson_and_no_hang(tmp_path):
    import os

    from tests.helpers import within

    os.mkfifo(tmp_path / "nv_tegra_release")
    got = within(2, lambda: detect_release(env={}, release_file=tmp_path / "nv_tegra_release"))
    assert (got.l4t, got.source) == ("", "none")
    # /dev/null is what a compose file mounts off-Jetson: an empty file, read as such.
    (tmp_path / "null").symlink_to(os.devnull)
    assert within(2, lambda: detect_release(env={}, release_file=tmp_path / "null")).source == \
        str(tmp_path / "null")


def test_absent():
    install = find_tensorrt()
    assert (install.present, install.major_minor) == (False, "none")


def test_reads_the_version_line_without_importing(tmp_path, monkeypatch):
    package = tmp_path / "site" / "tensorrt"
    package.mkdir(parents=True)
    # Importing this stand-in would fail loudly: the probe must only read it.
    (package / "__init__.py").write_text('raise ImportError("libnvinfer.so.10 not found")\n'
                                         '__version__ = "10.3.0"\n')
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libnvinfer.so.10.3.0").write_bytes(b"")
    (libs / "libnvinfer.so.8.6.2").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(libs))
    install = find_tensorrt()
    assert (install.version, install.major_minor) == ("10.3.0", "10.3")
    assert install.conflicts() == [f"{libs / 'libnvinfer.so.8.6.2'} (8.6.2)"]
    assert "tensorrt" not in sys.modules
