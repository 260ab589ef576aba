"""Decide whether a cached artifact may be reused: sidecar, record, signature, inputs.

:func:`check_artifact` does only reads and runs in worker threads; the caller turns the
returned :class:`Verdict` into events in a stable order.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import signing
from app.cache.hashing import EarlyDigests
from app.cache.record import diff_records, onnx_identity, read_record
from app.cache.sidecar import Sha256Sidecar

__all__ = ["Verdict", "check_artifact"]


@dataclass
class Verdict:
    """``reuse`` is the decision; ``reason`` one of the documented miss reasons."""

    reuse: bool
    reason: str  # hit | hit-untracked | absent | not-a-file | sidecar | record-corrupt
    #              | interrupted | provenance | signature
    digest: str | None = None
    onnx_sha256: str = ""
    onnx_stat: dict[str, int] = field(default_factory=dict)
    onnx_rehashed: bool = False
    changed: list[str] = field(default_factory=list)
    detail: str = ""


def check_artifact(
    artifact: Path,
    onnx_path: Path,
    expected: dict[str, Any],
    *,
    strict_onnx: bool,
    key: bytes | None,
    early: EarlyDigests | None = None,
) -> Verdict:
    """Compare ``artifact`` on disk with ``expected`` (the record the current inputs would give).

    ``expected`` lacks the ONNX digest; this fills it in from the stored record's stat facts or
    by hashing. ``early`` may hold the artifact's digest, hashed while the program started.
    Raises only for an unreadable ONNX file (the caller reports it as bad data).
    """
    record = read_record(artifact)
    onnx = onnx_identity(onnx_path, record.record, strict=strict_onnx)
    verdict = Verdict(False, "absent", onnx_sha256=onnx.sha256, onnx_stat=onnx.stat,
                      onnx_rehashed=onnx.rehashed)
    try:
        mode = os.lstat(artifact).st_mode
    except FileNotFoundError:
        return verdict
    except OSError as exc:
        verdict.reason, verdict.detail = "not-a-file", exc.strerror or str(exc)
        return verdict
    if not stat.S_ISREG(mode):
        verdict.reason, verdict.detail = "not-a-file", "a symlink or special file stands there"
        return verdict
    verdict.digest = Sha256Sidecar.verified_digest(artifact, early)
    if verdict.digest is None:
        verdict.reason = "sidecar"
        return verdict
    if record.problem:
        verdict.reason, verdict.detail = "record-corrupt", record.problem
        return verdict
    if record.record is None:
        # Pre-installed engines (baked into an image) have a sidecar but no record: trust the
        # sidecar unless signatures are required, and track the engine from now on.
        verdict.reuse, verdict.reason = key is None, "hit-untracked" if key is None else "signature"
        verdict.detail = "" if key is None else "no signed record"
        return verdict
    if record.record.get("status") == "building":
        verdict.reason, verdict.detail = "interrupted", "its build or publishing was interrupted"
        return verdict
    if key is not None and not signing.is_signed_by(key, record.record):
        verdict.reason, verdict.detail = "signature", "record signature does not verify"
        return verdict
    current = {**expected, "onnx_sha256": onnx.sha256, "engine_sha256": verdict.digest}
    verdict.changed = diff_records(record.record, current)
    if verdict.changed:
        verdict.reason = "provenance"
        return verdict
    verdict.reuse, verdict.reason = True, "hit"
    return verdict
