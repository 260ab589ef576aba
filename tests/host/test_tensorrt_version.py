"""The TensorRT version is read without importing TensorRT; two installs are flagged."""

from __future__ import annotations

import sys

from app.host.tensorrt import find_tensorrt


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
