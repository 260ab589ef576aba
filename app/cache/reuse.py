"""The reuse decision (docs/cache.md): may a cached artifact be used as is? :func:`check_artifact`
only reads (worker threads). Miss reasons, in the order they are checked: ``folder`` (may hold
someone's data: not built over), ``absent``, ``not-a-file``, ``size`` (not the trusted record's:
not worth hashing), ``sidecar``, ``record-corrupt``, ``interrupted`` (a pending record),
``signature``, ``untracked`` (no record, one older than the hardware identity, or, with
``trust_untracked`` off, one not signed with ``key``; on: ``hit-untracked``), ``provenance``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from app.cache.fsread import describe_mode
from app.cache.hashing import EarlyDigests, Sha256Sidecar
from app.cache.names import COMPANION_SUFFIXES, companion
from app.cache.record import BUILDING, OnnxIdentity, ProvenanceRecord, onnx_identity, read_record

_NOT_OURS = "its record was not written by this robot (not signed with its key)"


@dataclass
class Verdict:
    reuse: bool
    reason: str
    onnx: OnnxIdentity
    digest: str | None = None
    size: int | None = None
    changed: list[str] = field(default_factory=list)
    detail: str = ""


def _folder_in_the_way(artifact: Path) -> Path | None:
    for path in (artifact, *(companion(artifact, s) for s in COMPANION_SUFFIXES)):
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return path
        except OSError:
            continue
    return None


def check_artifact(
    artifact: Path,
    onnx_path: Path,
    expected: ProvenanceRecord,
    *,
    strict_onnx: bool,
    key: bytes | None,
    early: EarlyDigests | None = None,
    trust_untracked: bool = True,
) -> Verdict:
    """Compare ``artifact`` on disk with ``expected`` (less the ONNX and artifact digests, filled
    in here). Raises only for an unreadable ONNX file."""
    stored = read_record(artifact, key)
    onnx = onnx_identity(onnx_path, stored.record, strict=strict_onnx)
    verdict = Verdict(False, "absent", onnx)
    folder = _folder_in_the_way(artifact)
    if folder is not None:
        return _say(verdict, "folder", f"{folder} is a folder")
    try:
        st = os.lstat(artifact)
    except FileNotFoundError:
        return verdict
    except OSError as exc:
        return _say(verdict, "not-a-file", exc.strerror or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return _say(verdict, "not-a-file", f"{describe_mode(st.st_mode)} stands there")
    # Only a trusted record says the size: a forged one must still end as the "signature" miss.
    trusted = stored.record is not None and (key is None or stored.signed)
    noted_size = stored.record.engine_size if trusted and stored.record else None
    if noted_size is not None and noted_size != st.st_size:
        return _say(verdict, "size", f"{st.st_size} bytes, its record says {noted_size}")
    verdict.digest = Sha256Sidecar.verified_digest(artifact, early)
    if verdict.digest is None:
        return _say(verdict, "sidecar")
    verdict.size = st.st_size
    if stored.problem:
        return _say(verdict, "record-corrupt", stored.problem)
    if stored.record is None:
        if key is not None and trust_untracked:
            return _say(verdict, "signature", "record signature does not verify"
                        if stored.unsigned else "no signed record")
        return _untracked(verdict, trust_untracked,
                          _NOT_OURS if stored.unsigned else "no provenance record")
    if stored.record.status == BUILDING:
        return _say(verdict, "interrupted", "its build or publishing was interrupted")
    if not trust_untracked and not stored.signed:
        return _untracked(verdict, False, _NOT_OURS)
    if key is not None and not stored.signed:
        return _say(verdict, "signature", "record signature does not verify")
    current = dataclasses.replace(expected, onnx_sha256=onnx.sha256, engine_sha256=verdict.digest)
    # A record from before the hardware identity cannot tell SKUs apart (it still tells major
    # hardware apart: device name, full backend version): as much as a pre-installed engine.
    predates = not stored.record.sku and bool(current.sku)
    before = dataclasses.replace(current, sku={}) if predates else current
    verdict.changed = stored.record.diff(before)
    if not verdict.changed:
        if predates:
            return _untracked(verdict, trust_untracked, "its record predates the hardware identity")
        return _say(verdict, "hit", reuse=True)
    skus = [c[4:] for c in verdict.changed if c.startswith("sku.")]
    return _say(verdict, "provenance", "another SKU: " + "; ".join(
        f"{c}: record {stored.record.sku.get(c)!r}, this host {current.sku.get(c)!r}" for c in skus)
        if skus else "")


def _untracked(verdict: Verdict, trust: bool, why: str) -> Verdict:
    return _say(verdict, "hit-untracked" if trust else "untracked", why, reuse=trust)


def _say(verdict: Verdict, reason: str, detail: str = "", *, reuse: bool = False) -> Verdict:
    verdict.reuse, verdict.reason, verdict.detail = reuse, reason, detail
    return verdict
