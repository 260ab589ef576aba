"""Provenance records: reading never raises, diffs name the changed fields."""

from __future__ import annotations

from app.cache.record import diff_records, fingerprint, onnx_identity, read_record, record_path, write_record


def test_round_trip_and_diff(tmp_path):
    artifact = tmp_path / "m.engine"
    write_record(artifact, {"onnx_sha256": "a", "settings_fingerprint": "s", "backend": "trt"})
    got = read_record(artifact)
    assert got.problem is None and got.record is not None
    assert diff_records(got.record, {"onnx_sha256": "b", "settings_fingerprint": "s", "backend": "trt"}) \
        == ["onnx_sha256"]


def test_missing_and_corrupt_records(tmp_path):
    artifact = tmp_path / "m.engine"
    assert read_record(artifact).record is None and read_record(artifact).problem is None
    for content in (b"{broken", b"[]", b'{"schema": 99}', b"\xff\xfe", b"x" * (2 << 20)):
        record_path(artifact).write_bytes(content)
        got = read_record(artifact)
        assert got.record is None and got.problem


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_onnx_identity_reuses_the_digest_only_for_unchanged_stat(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"v1")
    first = onnx_identity(onnx, None, strict=False)
    assert first.rehashed
    same = onnx_identity(onnx, {"onnx_stat": first.stat, "onnx_sha256": first.sha256}, strict=False)
    assert not same.rehashed and same.sha256 == first.sha256
    onnx.write_bytes(b"v2")
    changed = onnx_identity(onnx, {"onnx_stat": first.stat, "onnx_sha256": first.sha256}, strict=False)
    assert changed.rehashed and changed.sha256 != first.sha256
