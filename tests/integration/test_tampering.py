"""Tampering: with a signing key, an engine rewritten together with its sidecar (by someone
without the key) is rebuilt, never reused; the marker is signed and wait-ready checks it."""

from __future__ import annotations

import hashlib
import json
import os

import yaml

from tests.helpers import cli, json_events, sha256


def _keyed(job, tmp_path):
    key = tmp_path / "signing.key"
    key.write_bytes(os.urandom(32).hex().encode())
    doc = yaml.safe_load(job.read_text())
    doc["signing_key_file"] = str(key)
    job.write_text(yaml.safe_dump(doc))
    return key


def test_consistent_forgery_is_rebuilt_with_a_loud_event(job, tmp_path):
    _keyed(job, tmp_path)
    assert cli("--config", str(job), "run").returncode == 0
    cache = job.parent / "cache"
    engine = next(cache.glob("dinov2_vpr*.ort"))
    forged = engine.read_bytes() + b"backdoor"
    engine.write_bytes(forged)
    (cache / f"{engine.name}.sha256").write_text(hashlib.sha256(forged).hexdigest())
    record = json.loads((cache / f"{engine.name}.record.json").read_text())
    record["engine_sha256"] = hashlib.sha256(forged).hexdigest()  # signature now stale
    (cache / f"{engine.name}.record.json").write_text(json.dumps(record))
    result = cli("--config", str(job), "run")
    assert result.returncode == 0 and "1 built, 2 reused" in result.stdout
    loud = [e for e in json_events(result.stderr) if e["kind"] == "c10.engine.signature.invalid"]
    assert len(loud) == 1 and loud[0]["level"] == "ERROR" and loud[0]["kv"]["model_name"] == "dinov2_vpr"
    assert engine.read_bytes() != forged


def test_engine_and_sidecar_swapped_without_touching_the_record(job, tmp_path):
    _keyed(job, tmp_path)
    assert cli("--config", str(job), "run").returncode == 0
    cache = job.parent / "cache"
    engine = next(cache.glob("aliked*.ort"))
    forged = b"not the engine"
    engine.write_bytes(forged)
    (cache / f"{engine.name}.sha256").write_text(hashlib.sha256(forged).hexdigest())
    result = cli("--config", str(job), "run")
    assert result.returncode == 0 and "1 built, 2 reused" in result.stdout
    assert sha256(engine) != hashlib.sha256(forged).hexdigest()


def test_unsigned_records_are_not_trusted_once_a_key_is_set(job, tmp_path):
    assert cli("--config", str(job), "run").returncode == 0  # written without a key
    _keyed(job, tmp_path)
    result = cli("--config", str(job), "run")
    assert result.returncode == 0 and "3 built, 0 reused" in result.stdout


def test_marker_is_signed_and_checked(job, tmp_path):
    _keyed(job, tmp_path)
    assert cli("--config", str(job), "run").returncode == 0
    marker = job.parent / "run" / "ready.json"
    assert "signature" in json.loads(marker.read_text())
    assert cli("--config", str(job), "wait-ready", "--timeout", "1").returncode == 0
    doc = json.loads(marker.read_text())
    doc["engines"][0]["engine_path"] = "/tmp/evil.engine"
    marker.write_text(json.dumps(doc))
    result = cli("--config", str(job), "wait-ready", "--timeout", "0.5")
    assert result.returncode == 75 and "signature" in result.stderr


def test_bad_key_file_is_a_config_error(job, tmp_path):
    key = _keyed(job, tmp_path)
    key.write_bytes(b"short")
    result = cli("--config", str(job), "run")
    assert result.returncode == 78 and "signing_key_file" in result.stderr
