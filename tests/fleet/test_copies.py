"""Copies of candidates made ahead of their promotion (app.fleet.copies): real signed folders,
real files, real threads; each copy is published or removed, and reads at most one byte past
the signed size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from app.cache.fsread import UnsafeFileError
from app.fleet.copies import EarlyCopies
from app.fleet.fetch import fetch_bundle, open_bundle
from tests.fleet.helpers import AGX, cache_files, export

SKU = AGX.sku_key()


def _robot(tmp_path: Path, keys) -> tuple[Path, Path, list[Path]]:  # type: ignore[no-untyped-def]
    files = cache_files(tmp_path / "reference")
    candidates, cache = tmp_path / "robot" / "candidates", tmp_path / "robot" / "cache"
    cache.mkdir(parents=True)
    with open_bundle(export(tmp_path / "bundle", files, AGX, keys)) as source:
        fetch_bundle(source, keys.public, AGX, candidates)
    engines = sorted(cache / n for n in files if n.endswith(".engine"))
    return candidates, cache, engines


def test_published_copies_are_the_signed_bytes_and_abandoned_ones_leave_nothing(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    copies = EarlyCopies(candidates, SKU, keys.public_file, engines)
    first, second = copies.take(engines[0]), copies.take(engines[1])
    assert first is not None and second is not None and copies.take(engines[0]) is None
    first.wait_copied()
    first.publish()
    signed = (candidates / SKU / "files" / engines[0].name).read_bytes()
    assert engines[0].read_bytes() == signed and first.digest == hashlib.sha256(signed).hexdigest()
    assert engines[0].stat().st_nlink == 1
    second.wait_copied()
    second.abandon()
    second._done.wait(5)
    assert sorted(os.listdir(cache)) == [engines[0].name]  # no temp file, nothing else


def test_a_candidate_grown_past_its_signed_size_is_read_one_byte_past_it(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    target = candidates / SKU / "files" / engines[0].name
    signed = target.stat().st_size
    with target.open("ab") as handle:  # 1 GiB more, as holes: never read past signed + 1
        handle.truncate(signed + (1 << 30))
    copies = EarlyCopies(candidates, SKU, keys.public_file, engines[:1])
    staged = copies.take(engines[0])
    assert staged is not None
    staged.wait_copied()
    assert staged.size == signed + 1 and staged.error is None
    copies.abandon()
    staged.abandon()
    staged._done.wait(5)
    assert os.listdir(cache) == []


def test_no_copy_is_made_from_a_folder_whose_signature_cannot_be_checked(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    copies = EarlyCopies(candidates, SKU, None, engines)
    assert [copies.take(e) for e in engines] == [None, None]
    assert os.listdir(cache) == []


@pytest.mark.parametrize("planted", ["fifo", "link", "link-to-device"])
def test_a_candidate_that_is_not_a_regular_file_is_never_opened_through(tmp_path, keys, planted):
    candidates, cache, engines = _robot(tmp_path, keys)
    target = candidates / SKU / "files" / engines[0].name
    kept = tmp_path / "kept"
    target.rename(kept)
    {"fifo": lambda: os.mkfifo(target), "link": lambda: target.symlink_to(kept),
     "link-to-device": lambda: target.symlink_to("/dev/zero")}[planted]()
    staged = EarlyCopies(candidates, SKU, keys.public_file, engines[:1]).take(engines[0])
    assert staged is not None
    staged.wait_copied()  # at once: a FIFO is opened without waiting for a writer
    assert isinstance(staged.error, UnsafeFileError), staged.error
    assert staged.error.filename == str(target)
    assert os.listdir(cache) == []
