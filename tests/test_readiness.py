"""The readiness marker: written atomically, checked for boot, signature and engine digests."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from app.errors import MarkerError
from app.readiness import check_marker, clear_marker, read_marker, wait_ready, write_marker

KEY = b"k" * 32


def _doc(tmp_path, boot="b1"):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    return {"boot_id": boot, "engines": [{"model_name": "m", "engine_path": str(engine),
                                          "sha256": hashlib.sha256(b"engine").hexdigest(),
                                          "outcome": "built"}]}


def test_write_read_check(tmp_path):
    marker = tmp_path / "ready.json"
    write_marker(marker, _doc(tmp_path), None)
    doc = read_marker(marker)
    check_marker(doc, key=None, boot_id="b1", verify_engines=True)
    with pytest.raises(MarkerError, match="not this boot"):
        check_marker(doc, key=None, boot_id="b2", verify_engines=False)
    (tmp_path / "m.engine").write_bytes(b"other")
    with pytest.raises(MarkerError, match="does not match"):
        check_marker(doc, key=None, boot_id="b1", verify_engines=True)
    assert clear_marker(marker) and not marker.exists() and not clear_marker(marker)


def test_signed_marker(tmp_path):
    marker = tmp_path / "ready.json"
    write_marker(marker, _doc(tmp_path), KEY)
    doc = read_marker(marker)
    check_marker(doc, key=KEY, boot_id="b1", verify_engines=False)
    doc["engines"][0]["engine_path"] = "/elsewhere"
    with pytest.raises(MarkerError, match="signature"):
        check_marker(doc, key=KEY, boot_id="b1", verify_engines=False)
    unsigned = _doc(tmp_path)
    write_marker(marker, unsigned, None)
    with pytest.raises(MarkerError, match="signature"):
        check_marker(read_marker(marker), key=KEY, boot_id="b1", verify_engines=False)


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"schema": 2}'])
def test_bad_marker_files(tmp_path, content):
    (tmp_path / "ready.json").write_bytes(content)
    with pytest.raises(MarkerError):
        read_marker(tmp_path / "ready.json")


def test_wait_ready_returns_when_the_marker_appears(tmp_path, monkeypatch):
    import app.readiness as readiness

    monkeypatch.setattr(readiness, "current_boot_id", lambda: "b1")
    marker = tmp_path / "ready.json"
    timer = threading.Timer(0.3, lambda: write_marker(marker, _doc(tmp_path), None))
    timer.start()
    start = time.monotonic()
    doc = wait_ready(marker, timeout_s=5, key=None, verify_engines=True, poll_s=0.05)
    assert doc["boot_id"] == "b1" and 0.25 < time.monotonic() - start < 3
    timer.join()
