"""Provenance records: ``<artifact>.record.json`` says what an artifact was built from.

A record binds the artifact's digest to the sha256 of the ONNX bytes, a fingerprint of every
build setting, the full backend version and the device. The compiler reuses an artifact only
when the record agrees with the current inputs. Reading never raises: a missing record is
``None`` and a corrupt one is reported as a problem string, and either way the caller decides.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import signing
from app.cache.hashing import hash_file
from app.cache.names import calibration_files
from app.cache.publish import atomic_write_bytes

__all__ = [
    "COMPARED_FIELDS",
    "OnnxIdentity",
    "RecordRead",
    "calibration_fingerprint",
    "diff_records",
    "fingerprint",
    "onnx_identity",
    "read_record",
    "record_path",
    "write_record",
]

SCHEMA = 1
_RECORD_MAX = 1 << 20
#: The fields whose disagreement means "rebuild"; build time and duration are informative only.
COMPARED_FIELDS = (
    "engine_sha256",
    "onnx_sha256",
    "settings_fingerprint",
    "backend",
    "backend_version",
    "device_name",
)


def record_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".record.json")


def fingerprint(settings: dict[str, Any]) -> str:
    """A stable digest of a JSON-able settings mapping (key order does not matter)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def calibration_fingerprint(folder: Path | None) -> str | None:
    """A digest of a model's calibration batches (file names and bytes); None without any.
    Keys both the provenance settings and TensorRT's calibration cache."""
    files = calibration_files(folder)
    return fingerprint({p.name: hash_file(p) for p in files}) if files else None


@dataclass(frozen=True)
class RecordRead:
    """A record as read: ``record`` None when absent, ``problem`` set when unreadable."""

    record: dict[str, Any] | None
    problem: str | None = None


def read_record(artifact: Path) -> RecordRead:
    """The record of ``artifact``: ``record=None`` when absent, ``problem`` set when corrupt."""
    path = record_path(artifact)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return RecordRead(None)
    except OSError as exc:
        return RecordRead(None, f"unreadable record {path.name}: {exc.strerror}")
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(_RECORD_MAX + 1)
    except OSError as exc:
        return RecordRead(None, f"unreadable record {path.name}: {exc.strerror}")
    if len(raw) > _RECORD_MAX:
        return RecordRead(None, f"record {path.name} is larger than {_RECORD_MAX} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return RecordRead(None, f"record {path.name} is not valid JSON: {exc}")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return RecordRead(None, f"record {path.name} has an unknown layout")
    return RecordRead(doc)


def write_record(artifact: Path, record: dict[str, Any], key: bytes | None = None) -> None:
    """Publish the record, signed over its final content when a key is given."""
    doc = signing.signed(key, {"schema": SCHEMA, **record})
    atomic_write_bytes(record_path(artifact), json.dumps(doc, indent=2, sort_keys=True).encode())


@dataclass(frozen=True)
class OnnxIdentity:
    """The ONNX file's digest and the stat facts that let a later boot trust it unread."""

    sha256: str
    stat: dict[str, int]
    rehashed: bool


def _stat_key(path: Path) -> dict[str, int]:
    st = os.stat(path)
    # ctime cannot be set from user space, so an edit that restores the mtime still shows.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def onnx_identity(path: Path, previous: dict[str, Any] | None, *, strict: bool) -> OnnxIdentity:
    """sha256 of the ONNX file, re-read only when its stat changed since ``previous`` (or strict)."""
    key = _stat_key(path)
    if not strict and previous is not None:
        old_stat, old_sha = previous.get("onnx_stat"), previous.get("onnx_sha256")
        if old_stat == key and isinstance(old_sha, str):
            return OnnxIdentity(old_sha, key, rehashed=False)
    # Models may be symlinks (current.onnx -> v3.onnx); only cache files refuse links.
    return OnnxIdentity(hash_file(Path(os.path.realpath(path))), key, rehashed=True)


def diff_records(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the compared fields that differ between a stored and the current record."""
    return [name for name in COMPARED_FIELDS if stored.get(name) != current.get(name)]
