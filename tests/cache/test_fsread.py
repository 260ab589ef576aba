"""The safe small-file reader against every kind of planted file: never a hang, never a link
followed, never more than the limit read."""

from __future__ import annotations

import os

import pytest

from app.cache import prehash
from app.cache.fsread import UnsafeFileError, read_small
from app.cache.lock import LOCK_NAME, read_holder
from app.cache.record import read_record, record_path
from app.cache.sidecar import Sha256Sidecar, sidecar_path
from app.errors import MarkerError
from app.readiness import read_marker
from tests.helpers import PLANTED_KINDS, plant, within


def test_reads_a_small_regular_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_small(path, 100) == b"x" * 100
    path.write_bytes(b"")
    assert read_small(path, 100) == b""


def test_absent_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_small(tmp_path / "nothing", 10)


def test_one_byte_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(UnsafeFileError, match="101 bytes"):
        read_small(path, 100)


@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_every_planted_kind_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "small.json"
    path.write_bytes(b'{"a": 1}')
    target = plant(path, kind, tmp_path / "outside")
    before = target.read_bytes() if target else None
    with pytest.raises(UnsafeFileError) as caught:
        within(2, lambda: read_small(path, 1 << 20))
    assert str(path) in str(caught.value)
    if target is not None:
        assert target.read_bytes() == before


def test_a_fifo_with_a_writer_is_still_refused(tmp_path):
    """Even with data waiting in it, a FIFO is not read (it is not a regular file)."""
    path = tmp_path / "f"
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(writer, b"0" * 64)
        with pytest.raises(UnsafeFileError, match="FIFO"):
            within(2, lambda: read_small(path, 256))
    finally:
        os.close(writer)


def _marker_refused(path):
    with pytest.raises(MarkerError, match="cannot read marker"):
        read_marker(path)
    return True


#: (file the reader reads, what it returns when that file is damaged), per reader of the cache.
READERS = {
    "sidecar": (lambda root: sidecar_path(root / "m.engine"),
                lambda root: Sha256Sidecar.read(root / "m.engine") is None),
    "record": (lambda root: record_path(root / "m.engine"),
               lambda root: read_record(root / "m.engine").problem is not None),
    "lock holder": (lambda root: root / LOCK_NAME,
                    lambda root: read_holder(root / LOCK_NAME) is None),
    "hint": (lambda root: root / prehash.HINT_NAME, lambda root: prehash.read_hint(root) == []),
    "marker": (lambda root: root / "ready.json", lambda root: _marker_refused(root / "ready.json")),
}


@pytest.mark.parametrize("kind", [k for k in PLANTED_KINDS if k != "dangling-link"])
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_treats_every_planted_kind_as_damage(tmp_path, reader, kind):
    where, damaged = READERS[reader]
    path = where(tmp_path)
    path.write_bytes(b"{}")
    target = plant(path, kind, tmp_path / "outside")
    assert within(2, lambda: damaged(tmp_path))
    if target is not None:
        assert target.read_bytes() == b"{}"
