"""Promotion: turn a candidate from a bundle (:mod:`app.fleet.candidates`) into this cache's
engine, after checking it on this host, instead of building it.

A candidate is promoted only when its record was built on this host's SKU (the identity's SKU
facts), from the same ONNX bytes with the same settings and backend release (the provenance
diff the reuse decision uses), its bytes are those its record and sidecar name, and the
backend loads it and finds the ONNX model's inputs and outputs (``verify_artifact``). The
bytes are read once: hashed, checked by the backend, then published as any build publishes.
Anything else is a rejection with its reason; the caller then builds as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cache.record import ProvenanceRecord, read_record
from app.cache.sidecar import Sha256Sidecar
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
            before_publish: Callable[[], None]) -> Promotion | None:
    """Publish the candidate of ``artifact`` for ``sku`` at ``artifact``; None when there is
    no candidate for it. ``expected``: the record the current inputs give; ``before_publish``
    runs once everything checked out, before the first byte is written (the pending record)."""
    from app.cache.fsread import read_small

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
        payload = read_small(candidate, record.engine_size)
    except (OSError, ValueError) as exc:
        return Promotion(candidate, reason=f"unreadable: {exc}")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != record.engine_sha256 or Sha256Sidecar.read(candidate) != digest:
        return Promotion(candidate, reason="its bytes are not those its record and sidecar name")
    check = getattr(runtime, "verify_artifact", None)
    if check is None:
        return Promotion(candidate, reason=f"the {runtime.name} backend cannot check a candidate")
    try:
        check(payload, onnx_path, build_config)
    except Exception as exc:  # the backend's own words: a rejection, never a failed run
        return Promotion(candidate, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
    before_publish()
    Sha256Sidecar.write_atomic_and_sidecar(artifact, payload)
    return Promotion(candidate, digest, len(payload))
