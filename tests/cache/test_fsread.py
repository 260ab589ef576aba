"""The safe small-file reader against every kind of planted file: never a hang, never a link
followed, never more than the limit read."""

from __future__ import annotations

import os

import pytest

from app.cache import hashing
from app.cache.fsread import UnsafeFileError, open_binary, open_regular, parse_json, read_small
from app.cache.hashing import Sha256Sidecar, sidecar_path
from app.cache.lock import LOCK_NAME, read_holder
from app.cache.record import read_record, record_path
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


def _read_by_dir_fd(path, limit):
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_small(path.name, limit, dir_fd=fd)
    finally:
        os.close(fd)


#: The reader's modes, as their callers use them: the cache's files; a bundle layout's files
#: (dir_fd); files a user names (the config, key files: links followed); procfs and sysfs
#: (the governor: links followed, the first bytes of a file of any size).
MODES = {
    "cache": lambda path: read_small(path, 1 << 20),
    "dir_fd": lambda path: _read_by_dir_fd(path, 1 << 20),
    "follow_links": lambda path: read_small(path, 1 << 20, follow_links=True),
    "truncate": lambda path: read_small(path, 16 << 10, follow_links=True, truncate=True),
}


def _expected(kind, mode):
    """What ``mode`` makes of a planted ``kind``: bytes read, or the error raised."""
    follows = mode in ("follow_links", "truncate")
    if kind == "link-to-copy" and follows:
        return b'{"a": 1}'
    if kind == "dangling-link" and follows:
        return FileNotFoundError
    if kind in ("huge", "sparse-8g") and mode == "truncate":
        return 16 << 10  # bytes: the first 16 KiB only
    return UnsafeFileError


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_every_planted_kind_in_every_mode(tmp_path, kind, mode):
    """Refused at once, or, where the mode says so, read within its bound: a link followed
    only to a regular file, never a FIFO, socket, device (or a link to one) or folder."""
    path = tmp_path / "small.json"
    path.write_bytes(b'{"a": 1}')
    target = plant(path, kind, tmp_path / "outside")
    before = target.read_bytes() if target else None
    expected = _expected(kind, mode)
    if isinstance(expected, type):
        with pytest.raises(expected) as caught:
            within(2, lambda: MODES[mode](path))
        assert path.name in str(caught.value)
    else:
        got = within(2, lambda: MODES[mode](path))
        assert got == expected if isinstance(expected, bytes) else len(got) == expected
    if target is not None:
        assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["link-to-dev-zero", "fifo"])
def test_a_followed_link_to_anything_but_a_file_is_never_opened(tmp_path, kind, monkeypatch):
    """Opening a device can act (a watchdog starts): what a link names is looked at first."""
    os.mkfifo(tmp_path / "fifo")
    path = tmp_path / "link"
    path.symlink_to("/dev/zero" if kind == "link-to-dev-zero" else tmp_path / "fifo")
    monkeypatch.setattr(os, "open", lambda *a, **kw: pytest.fail(f"opened {a}"))
    with pytest.raises(UnsafeFileError, match=r"device|FIFO"):
        read_small(path, 64, follow_links=True)


@pytest.mark.parametrize("follow_links", [False, True])
@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "link-to-dev-zero", "folder"])
def test_open_binary_refuses_what_is_no_regular_file_at_once(tmp_path, kind, follow_links):
    """The large files (engines, models, calibration batches) are read through a file object:
    the same refusal as read_small, before any byte is read."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    plant(path, kind, tmp_path / "outside")
    with pytest.raises(UnsafeFileError) as caught:
        within(2, lambda: open_binary(path, follow_links=follow_links))
    assert path.name in str(caught.value)
    path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    path.write_bytes(b"engine bytes")
    with open_binary(path) as handle:
        assert (handle.read(), handle.name) == (b"engine bytes", str(path))


def test_open_regular_opens_folders_only_when_asked(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    os.close(open_regular(tmp_path / "d", folder=True))
    for name in ("f", "link"):
        with pytest.raises(UnsafeFileError):
            open_regular(tmp_path / name, folder=True)
    os.close(open_regular(tmp_path / "link", folder=True, follow_links=True))
    with pytest.raises(UnsafeFileError, match="a folder stands there"):
        open_regular(tmp_path / "d")


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
    with pytest.raises(MarkerError, match=r"cannot read marker|not valid JSON|unknown layout"):
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
    "hint": (lambda root: root / hashing.HINT_NAME, lambda root: hashing.read_hint(root) == []),
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


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"d": NaN}', "NaN"), (b'{"d": Infinity}', "Infinity"), (b'[-Infinity]', "Infinity"),
    (b'{"d": 1e999}', "out of range"), (b'{"d": -1e400}', "out of range"),
    (b'{"n": ' + b"9" * 5000 + b"}", "5000 digits"), (b"[" * 33 + b"]" * 33, "nested"),
    (b"[" * 100_000, "nested"), (b'{"a": ' * 40 + b"1" + b"}" * 40, "nested"),
])
def test_parse_json_refuses_what_the_job_never_writes(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_json(raw)


def test_parse_json_counts_only_brackets_outside_strings():
    deep_text = '"' + "[" * 1000 + '\\"{' + '"'
    assert parse_json(f'{{"s": {deep_text}, "n": [[1.5, -2, 12345678901234567890]]}}') == {
        "s": "[" * 1000 + '"{', "n": [[1.5, -2, 12345678901234567890]]}
    assert parse_json(b"[" * 32 + b"]" * 32) is not None


@pytest.mark.parametrize("reader", ["record", "lock holder", "hint", "marker"])
@pytest.mark.parametrize("content", [b'{"schema": 1, "engines": [], "x": NaN}',
                                     b"[" * 5000 + b"]" * 5000])
def test_every_json_reader_treats_a_hostile_document_as_damage(tmp_path, reader, content):
    where, damaged = READERS[reader]
    where(tmp_path).write_bytes(content)
    assert within(2, lambda: damaged(tmp_path))
