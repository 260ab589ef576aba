"""sha256 sidecars: format, and verification that never raises."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from app import Sha256Sidecar
from app.cache.sidecar import sidecar_path


def test_write_then_verify(tmp_path):
    path = tmp_path / "m.engine"
    digest = Sha256Sidecar.write_atomic_and_sidecar(path, b"engine bytes")
    assert digest == hashlib.sha256(b"engine bytes").hexdigest()
    assert path.read_bytes() == b"engine bytes"
    assert sidecar_path(path).read_text() == digest
    assert sidecar_path(path).name == "m.engine.sha256"
    assert Sha256Sidecar.verify(path)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_verify_is_false_never_raising(tmp_path):
    path = tmp_path / "m.engine"
    assert Sha256Sidecar.verify(path) is False                 # nothing at all
    path.write_bytes(b"x")
    assert Sha256Sidecar.verify(path) is False                 # no sidecar
    sidecar_path(path).write_text("nothex" * 10)
    assert Sha256Sidecar.verify(path) is False                 # malformed
    sidecar_path(path).write_text(hashlib.sha256(b"y").hexdigest())
    assert Sha256Sidecar.verify(path) is False                 # mismatch
    sidecar_path(path).write_text(hashlib.sha256(b"x").hexdigest().upper())
    assert Sha256Sidecar.verify(path) is False                 # uppercase is not our format
    sidecar_path(path).write_bytes(hashlib.sha256(b"x").hexdigest().encode() + b" " * 500)
    assert Sha256Sidecar.verify(path) is False                 # oversized
    sidecar_path(path).write_text(hashlib.sha256(b"x").hexdigest() + "\n")
    assert Sha256Sidecar.verify(path) is True                  # hand-written with a newline


def test_symlinked_engine_is_not_followed(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"evil")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "m.engine").symlink_to(outside)
    sidecar_path(cache / "m.engine").write_text(hashlib.sha256(b"evil").hexdigest())
    assert Sha256Sidecar.verify(cache / "m.engine") is False


def test_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "m.engine")
    sidecar_path(tmp_path / "m.engine").write_text("0" * 64)
    assert Sha256Sidecar.verify(tmp_path / "m.engine") is False


def test_directory_is_false(tmp_path):
    (tmp_path / "m.engine").mkdir()
    sidecar_path(tmp_path / "m.engine").write_text("0" * 64)
    assert Sha256Sidecar.verify(tmp_path / "m.engine") is False


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_sidecar_reader_never_raises_on_any_content(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "e").write_bytes(b"payload")
    sidecar_path(folder / "e").write_bytes(content)
    expected = content.strip() == hashlib.sha256(b"payload").hexdigest().encode()
    assert Sha256Sidecar.verify(folder / "e") is expected
