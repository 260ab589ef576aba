"""Promotion: turn a candidate from a bundle (:mod:`app.fleet.candidates`) into this cache's
engine, after checking it on this host, instead of building it.

A candidate is promoted only when its record was built on this host's SKU (the identity's SKU
facts), from the same ONNX bytes with the same settings and backend release (the provenance
diff the reuse decision uses), its bytes are those its record and sidecar name, and the
backend loads it and finds the ONNX model's inputs and outputs (``verify_artifact``, given
the candidate's path). The candidate file is then hard-linked in place when it is still the
file that was hashed (same inode, size and mtime): no engine bytes are written. Where no link
can be made, it is copied and hashed again while copied.
Anything else is a rejection with its reason; the caller then builds as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cache.hashing import EarlyDigests, sha256_of
from app.cache.publish import atomic_link, atomic_write_bytes, atomic_writer
from app.cache.record import ProvenanceRecord, read_record
from app.cache.sidecar import Sha256Sidecar, sidecar_path
from app.fleet.candidates import candidate_folder

__all__ = ["Promotion", "promote"]


@dataclass(frozen=True)
class Promotion:
    """``digest`` set when promoted; ``reason`` says why not otherwise."""

    candidate: Path
    digest: str | None = None
    size: int | None = None
    reason: str = ""


def promote(runtime: Any, cache_root: Path, sku: str, artifact: Path, expected: ProvenanceRecord,
            onnx_sha256: str, onnx_path: Path, build_config: Any,
            before_publish: Callable[[], None], early: EarlyDigests | None = None
            ) -> Promotion | None:
    """Publish the candidate of ``artifact`` for ``sku`` at ``artifact``; None when there is
    no candidate for it. ``expected``: the record the current inputs give; ``before_publish``
    runs once everything checked out, before the first byte is written (the pending record);
    ``early``: digests hashed since the run started (:mod:`app.cache.prehash`)."""
    candidate = candidate_folder(cache_root, sku) / "files" / artifact.name
    if not candidate.exists() and not candidate.is_symlink():
        return None
    stored = read_record(candidate)
    if stored.record is None:
        return Promotion(candidate, reason=stored.problem or "the candidate has no record")
    record = stored.record
    current = dataclasses.replace(expected, onnx_sha256=onnx_sha256,
                                  engine_sha256=record.engine_sha256)
    changed = record.diff(current)
    if changed:
        return Promotion(candidate, reason="built from other inputs: " + ", ".join(changed))
    if record.engine_size is None:
        return Promotion(candidate, reason="its record does not note the engine's size")
    try:
        digest, read_stat = _hash(candidate, record.engine_size, early)
    except (OSError, ValueError) as exc:
        return Promotion(candidate, reason=f"unreadable: {exc}")
    if digest != record.engine_sha256 or Sha256Sidecar.read(candidate) != digest:
        return Promotion(candidate, reason="its bytes are not those its record and sidecar name")
    check = getattr(runtime, "verify_artifact", None)
    if check is None:
        return Promotion(candidate, reason=f"the {runtime.name} backend cannot check a candidate")
    try:
        check(candidate, onnx_path, build_config)
    except Exception as exc:  # the backend's own words: a rejection, never a failed run
        return Promotion(candidate, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
    before_publish()
    # The candidate file itself becomes the engine (a hard link: nothing written, no space
    # taken twice) when it is still the file that was hashed; else its bytes are copied, and
    # hashed again on the way.
    if not atomic_link(candidate, artifact, lambda st: _same(st, read_stat)):
        try:
            _copy(candidate, artifact, digest)
        except _ChangedError:
            return Promotion(candidate, reason="it changed while it was checked")
    atomic_write_bytes(sidecar_path(artifact), digest.encode("ascii"))
    return Promotion(candidate, digest, record.engine_size)


class _ChangedError(Exception):
    pass


def _hash(path: Path, size: int, early: EarlyDigests | None) -> tuple[str, os.stat_result]:
    """The file's sha256 (hashed early, for this very file, or now) and its stat; ValueError
    unless it holds ``size`` bytes."""
    from app.fleet.safefile import open_regular

    with os.fdopen(open_regular(path), "rb", buffering=0) as handle:
        stat = os.fstat(handle.fileno())
        if stat.st_size != size:
            raise ValueError(f"it holds {stat.st_size} bytes, not the {size} its record notes")
        digest = early.take(path, stat) if early is not None else None
        return digest or sha256_of(handle), stat


def _copy(candidate: Path, artifact: Path, digest: str) -> None:
    """Publish a copy of ``candidate`` (where no hard link can be made); _ChangedError, with
    nothing published, unless the bytes copied are the ``digest`` checked."""
    from app.fleet.safefile import open_regular

    sha = hashlib.sha256()
    with os.fdopen(open_regular(candidate), "rb") as source, atomic_writer(artifact) as out:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            sha.update(chunk)
            out.write(chunk)
        if sha.hexdigest() != digest:
            raise _ChangedError


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)
