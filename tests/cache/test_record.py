"""Provenance records: typed, round-tripped, read without ever raising; diffs name the changed
compared fields only."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest

from app.cache import signing
from app.cache.record import (
    ProvenanceRecord,
    fingerprint,
    onnx_identity,
    read_record,
    record_path,
    write_record,
)

KEY = b"k" * 32


def _record(**changes):
    base = ProvenanceRecord.build(
        model_name="m", settings={"precision": "fp16", "workspace_mb": 4096}, backend="tensorrt",
        backend_version="10.3.0", device_name="Orin", host={"sm": 87})
    return dataclasses.replace(base, **{"onnx_sha256": "a" * 64, "engine_sha256": "e" * 64,
                                        "engine_size": 123, **changes})


def test_round_trip(tmp_path):
    record = _record(onnx_stat={"size": 1, "ino": 2}, build_duration_s=1.5)
    assert ProvenanceRecord.from_json(record.to_json()) == record
    write_record(tmp_path / "m.engine", record)
    got = read_record(tmp_path / "m.engine")
    assert got.problem is None and got.record == record and not got.signed
    assert record.settings_fingerprint == fingerprint(record.settings)


def test_diff_names_compared_fields_only():
    stored = _record()
    assert stored.diff(stored) == []
    assert stored.diff(_record(onnx_sha256="b" * 64)) == ["onnx_sha256"]
    assert stored.diff(_record(backend_version="10.3.1", device_name="Thor")) \
        == ["backend_version", "device_name"]
    # Facts kept for people and tools never decide reuse.
    assert stored.diff(_record(built_at="2030-01-01T00:00:00Z", engine_size=1, onnx_path="/x")) == []


def test_diff_names_the_keys_of_a_compared_mapping_that_differ():
    agx = _record(sku={"sm_count": 16, "board_module": "p3701-0005", "jetpack": "6.2"},
                  hardware={"cuda_driver": 12060})
    nx = replace(agx, sku={"sm_count": 8, "board_module": "p3767-0000", "jetpack": "6.2"},
                 hardware={"cuda_driver": 12080})
    assert agx.diff(nx) == ["sku.board_module", "sku.sm_count"]
    # A record without the mapping (written before it existed) names the field itself.
    assert replace(agx, sku={}).diff(nx) == ["sku"]


def test_adding_a_field_needs_no_other_change():
    """diff, to_json and from_json follow the fields: a new one needs only its declaration."""
    compared = {f.name for f in dataclasses.fields(ProvenanceRecord) if f.metadata["compared"]}
    assert compared == {"engine_sha256", "onnx_sha256", "settings_fingerprint", "backend",
                        "backend_version", "device_name", "sku"}
    doc = json.loads(_record().to_json())
    assert set(doc) == {f.name for f in dataclasses.fields(ProvenanceRecord)} | {"schema"}


def test_a_record_of_the_previous_release_still_reads_and_verifies(tmp_path):
    """Before the typed record: no engine_size, no status on final records; signed as stored."""
    old = {"schema": 1, "model_name": "m", "settings": {"precision": "fp16"},
           "settings_fingerprint": fingerprint({"precision": "fp16"}), "backend": "onnxruntime",
           "backend_version": "1.20.1", "device_name": "cpu", "host": {"sm": 0},
           "artifact": "m.ort", "engine_sha256": "e" * 64, "onnx_path": "/m.onnx",
           "onnx_sha256": "a" * 64, "onnx_stat": {"size": 1}, "built_at": "2025-01-01T00:00:00Z",
           "build_duration_s": 1.0}
    record_path(tmp_path / "m.ort").write_text(json.dumps(signing.signed(KEY, old)))
    got = read_record(tmp_path / "m.ort", KEY)
    assert got.problem is None and got.signed
    assert got.record is not None and got.record.status == "built" and got.record.engine_size is None


def test_signature_is_checked_on_the_stored_document(tmp_path):
    write_record(tmp_path / "m.engine", _record(), KEY)
    assert read_record(tmp_path / "m.engine", KEY).signed
    assert not read_record(tmp_path / "m.engine", b"x" * 32).signed
    doc = json.loads(record_path(tmp_path / "m.engine").read_text())
    doc["engine_sha256"] = "f" * 64
    record_path(tmp_path / "m.engine").write_text(json.dumps(doc))
    got = read_record(tmp_path / "m.engine", KEY)
    assert got.record is None and got.unsigned and not got.signed and got.problem is None
    assert read_record(tmp_path / "m.engine").record is not None  # without a key: read


@pytest.mark.parametrize("content", [
    b"{broken", b"[]", b'{"schema": 99}', b"\xff\xfe", b"x" * (2 << 20), b"[" * 100_000,
    b'{"schema": 1, "engine_size": "big"}', b'{"schema": 1, "onnx_stat": []}',
    b'{"schema": 1, "engine_size": true}', b'{"schema": 1, "backend": null}'])
def test_damaged_records_are_a_problem_never_an_exception(tmp_path, content):
    artifact = tmp_path / "m.engine"
    assert read_record(artifact).record is None and read_record(artifact).problem is None
    record_path(artifact).write_bytes(content)
    got = read_record(artifact)
    assert got.record is None and got.problem and "m.engine.record.json" in got.problem
    with pytest.raises(ValueError):
        ProvenanceRecord.from_json(content)


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_onnx_identity_reuses_the_digest_only_for_unchanged_stat(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    first = onnx_identity(onnx, None, strict=False)
    assert first.rehashed
    previous = ProvenanceRecord(onnx_stat=first.stat, onnx_sha256=first.sha256)
    same = onnx_identity(onnx, previous, strict=False)
    assert not same.rehashed and same.sha256 == first.sha256
    assert onnx_identity(onnx, previous, strict=True).rehashed
    onnx.write_bytes(b"v2")
    changed = onnx_identity(onnx, previous, strict=False)
    assert changed.rehashed and changed.sha256 != first.sha256
