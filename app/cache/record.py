"""Provenance records: ``<artifact>.record.json`` says what an artifact was built from (fields:
docs/cache.md; read in docs/hardening.md#documents-read-from-disk's order). Adding a fact is one
field, ``COMPARED`` when a change of it must rebuild the artifact, ``NOTED`` when only kept; an
older record reads it as the default, so a new ``COMPARED`` fact rebuilds those artifacts once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cache import signing
from app.cache.fsread import parse_json, read_small
from app.cache.hashing import hash_file, sha256_bytes
from app.cache.names import RECORD_SUFFIX, calibration_files, companion
from app.cache.publish import atomic_write_bytes

SCHEMA = 1
BUILT, BUILDING = "built", "building"
_RECORD_MAX = 1 << 20
MAX_DURATION_S = 7 * 24 * 3600.0

COMPARED = types.MappingProxyType({"compared": True})
NOTED = types.MappingProxyType({"compared": False})


@dataclass(frozen=True)
class ProvenanceRecord:
    model_name: str = field(default="", metadata=NOTED)
    artifact: str = field(default="", metadata=NOTED)
    status: str = field(default=BUILT, metadata=NOTED)
    engine_sha256: str | None = field(default=None, metadata=COMPARED)
    engine_size: int | None = field(default=None, metadata=NOTED)
    onnx_path: str = field(default="", metadata=NOTED)
    onnx_sha256: str = field(default="", metadata=COMPARED)
    onnx_stat: dict[str, int] = field(default_factory=dict, metadata=NOTED)
    settings: dict[str, Any] = field(default_factory=dict, metadata=NOTED)
    settings_fingerprint: str = field(default="", metadata=COMPARED)
    backend: str = field(default="", metadata=COMPARED)
    backend_version: str = field(default="", metadata=COMPARED)
    device_name: str = field(default="", metadata=COMPARED)
    host: dict[str, Any] = field(default_factory=dict, metadata=NOTED)
    built_at: str = field(default="", metadata=NOTED)
    build_duration_s: float | None = field(default=None, metadata=NOTED)
    #: app.host.identity.SKU_FIELDS; ``{}`` in an older record (app.cache.reuse: untracked-like).
    sku: dict[str, Any] = field(default_factory=dict, metadata=COMPARED)
    hardware: dict[str, Any] = field(default_factory=dict, metadata=NOTED)
    #: AccuracyReport.to_json: noted, so a new tolerance means a new check, not a rebuild.
    accuracy: dict[str, Any] | None = field(default=None, metadata=NOTED)
    timing_cache: bool | None = field(default=None, metadata=NOTED)
    #: Earlier builds on this SKU, oldest first, kept across rebuilds for the governor's ETA.
    past_builds: list[dict[str, Any]] = field(default_factory=list, metadata=NOTED)
    precision_in_effect: dict[str, Any] | None = field(default=None, metadata=NOTED)
    #: ModelInterface.to_json: a fleet candidate of the same ``onnx_sha256`` is checked against it.
    onnx_io: dict[str, Any] | None = field(default=None, metadata=NOTED)
    origin: str = field(default="", metadata=NOTED)

    @classmethod
    def build(cls, *, settings: dict[str, Any], **facts: Any) -> ProvenanceRecord:
        return cls(settings=settings, settings_fingerprint=fingerprint(settings), **facts)

    def diff(self, other: ProvenanceRecord) -> list[str]:
        """The compared fields that differ, in field order (a mapping's keys: ``sku.sm_count``)."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if not f.metadata["compared"] or mine == theirs:
                continue
            if isinstance(mine, dict) and isinstance(theirs, dict) and mine and theirs:
                out += [f"{f.name}.{k}" for k in sorted(mine.keys() | theirs.keys())
                        if mine.get(k) != theirs.get(k)]
            else:
                out.append(f.name)
        return out

    def to_json(self, key: bytes | None = None) -> bytes:
        doc = signing.signed(key, {"schema": SCHEMA, **dataclasses.asdict(self)})
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProvenanceRecord:
        return cls._from_doc(_load(raw))

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> ProvenanceRecord:
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in doc:
                if not _conforms(doc[f.name], _HINTS[f.name]):
                    raise ValueError(f"its {f.name} is not a {_HINTS[f.name]}")
                values[f.name] = doc[f.name]
        durations = [values.get("build_duration_s")] + [
            b.get("build_duration_s") if isinstance(b, dict) else b
            for b in values.get("past_builds", [])]
        if any(d is not None and not is_duration(d) for d in durations):
            raise ValueError(f"it notes a build duration outside 0..{MAX_DURATION_S:g} s")
        return cls(**values)


def is_duration(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= MAX_DURATION_S)


_HINTS = typing.get_type_hints(ProvenanceRecord)


def _conforms(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    kind = typing.get_origin(hint) or hint
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _load(raw: bytes | str) -> dict[str, Any]:
    try:
        doc = parse_json(raw)
    except ValueError as exc:
        raise ValueError(f"it is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError("it has an unknown layout")
    return doc


def record_path(artifact: Path) -> Path:
    return companion(artifact, RECORD_SUFFIX)


def fingerprint(settings: dict[str, Any]) -> str:
    return sha256_bytes(signing.canonical(settings))


def calibration_fingerprint(folder: Path | None) -> str | None:
    """A digest of a model's calibration batches (names and bytes): the settings' and
    TensorRT's calibration cache's key; None without any."""
    files = calibration_files(folder)
    return fingerprint({p.name: hash_file(p) for p in files}) if files else None


@dataclass(frozen=True)
class RecordRead:
    """``record`` None when absent, damaged (``problem``) or not signed with the key given
    (``unsigned``); ``signed``: it verifies with the key given."""

    record: ProvenanceRecord | None
    problem: str | None = None
    signed: bool = False
    unsigned: bool = False


def read_record(artifact: Path, key: bytes | None = None) -> RecordRead:
    path = record_path(artifact)
    try:
        doc = _load(read_small(path, _RECORD_MAX))
        # On the document as stored (an older release's record still verifies), before any field.
        if key is not None and not signing.is_signed_by(key, doc):
            return RecordRead(None, unsigned=True)
        record = ProvenanceRecord._from_doc(doc)
    except FileNotFoundError:
        return RecordRead(None)
    except OSError as exc:
        return RecordRead(None, f"unreadable record {path.name}: {exc.strerror or exc}")
    except ValueError as exc:
        return RecordRead(None, f"record {path.name}: {exc}")
    return RecordRead(record, signed=key is not None)


def write_record(artifact: Path, record: ProvenanceRecord, key: bytes | None = None) -> None:
    atomic_write_bytes(record_path(artifact), record.to_json(key))


@dataclass(frozen=True)
class OnnxIdentity:
    sha256: str
    stat: dict[str, int]
    rehashed: bool


def _stat_key(path: Path) -> dict[str, int]:
    st = os.stat(path)
    # ctime cannot be set from user space, so an edit that restores the mtime still shows.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def onnx_identity(path: Path, previous: ProvenanceRecord | None, *, strict: bool) -> OnnxIdentity:
    key = _stat_key(path)
    if not strict and previous is not None and previous.onnx_stat == key and previous.onnx_sha256:
        return OnnxIdentity(previous.onnx_sha256, key, rehashed=False)
    # Models may be symlinks (current.onnx -> v3.onnx); only cache files refuse links.
    return OnnxIdentity(hash_file(Path(os.path.realpath(path))), key, rehashed=True)
