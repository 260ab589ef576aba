"""The readiness marker: written atomically, checked for boot, signature and engine digests."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from app.errors import CacheWriteError, MarkerError
from app.readiness import (
    check_marker,
    check_replaceable,
    clear_marker,
    read_marker,
    wait_ready,
    write_marker,
)

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


def _someones_file(path):
    path.write_text("# the navigation stack's settings, not a marker\n")


def _json_of_another_layout(path):
    path.write_text(json.dumps({"schema": 2, "engines": []}))


def _huge(path):
    with open(path, "wb") as handle:  # sparse: 8 GiB that read as zeros
        handle.truncate(8 << 30)


def _folder(path):
    path.mkdir()
    (path / "keep.txt").write_text("someone's data")


def _fifo(path):
    os.mkfifo(path)


def _link_to_a_marker(path):
    write_marker(path.with_name("real.json"), {"engines": []}, None)
    path.symlink_to(path.with_name("real.json"))


def _dangling_link(path):
    path.symlink_to(path.with_name("nowhere"))


def _deep_json(path):
    path.write_text("[" * 200_000)


NOT_MARKERS = [_someones_file, _json_of_another_layout, _huge, _folder, _fifo, _link_to_a_marker,
               _dangling_link, _deep_json]


def _state(path):
    """What stands at ``path``: type, and bytes for a small regular file."""
    st = os.lstat(path)
    small = path.is_file() and not path.is_symlink() and st.st_size < 1 << 20
    return st.st_mode, st.st_ino, st.st_size, path.read_bytes() if small else None


@pytest.mark.parametrize("plant", NOT_MARKERS, ids=[f.__name__.strip("_") for f in NOT_MARKERS])
def test_what_is_not_a_marker_is_refused_and_left_untouched(tmp_path, plant):
    marker = tmp_path / "ready.json"
    plant(marker)
    before = _state(marker)
    for attempt in (lambda: check_replaceable(marker), lambda: clear_marker(marker),
                    lambda: write_marker(marker, _doc(tmp_path), None)):
        with pytest.raises(CacheWriteError, match=r"ready\.json") as caught:
            attempt()
        assert "\n" not in str(caught.value) and caught.value.hint
        assert _state(marker) == before


def test_a_marker_is_replaceable_and_nothing_is_not_there(tmp_path):
    marker = tmp_path / "ready.json"
    assert check_replaceable(marker) is False
    write_marker(marker, _doc(tmp_path), KEY)
    assert check_replaceable(marker) is True
    write_marker(marker, _doc(tmp_path, boot="b2"), None)  # an old marker is replaced
    assert read_marker(marker)["boot_id"] == "b2"


def test_a_fifo_as_the_boot_id_file_reads_as_no_boot_id(tmp_path):
    from app.readiness import current_boot_id
    from tests.helpers import within

    os.mkfifo(tmp_path / "boot_id")
    assert within(2, lambda: current_boot_id(tmp_path / "boot_id")) == ""
    (tmp_path / "id").write_text("3f1c\n")
    assert current_boot_id(tmp_path / "id") == "3f1c"
