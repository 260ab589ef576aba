"""Promotion: turn a candidate from a bundle (:mod:`app.fleet.candidates`) into this cache's
engine, after checking it on this host, instead of building it.

A candidate is promoted only when its folder is still the bundle the fleet signed
(:mod:`app.fleet.trust`: the signature with ``fleet.public_key_file``, the manifest's digest),
its record and bytes are the files that manifest lists, the record was built on this host's SKU
(the identity's SKU facts) from the same ONNX bytes with the same settings and backend release
(the provenance diff the reuse decision uses), the backend loads it and finds the ONNX model's
inputs and outputs (``verify_artifact``), and, for a model whose ``verify`` is ``accuracy``,
it passes the accuracy gate as a local build must. The bytes are read and hashed once, checked
by the backend, then published as any build publishes; the gate then runs on the published
engine, and a candidate that fails it is unpublished at once (its pending record stays until the
local build replaces it), so that no engine that failed the gate remains published. Anything
else is a rejection with its reason; the caller then builds as before.

Before such a local build, :func:`seed_timing_cache` gives it the bundle's TensorRT timing cache.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.cache.publish import atomic_write_bytes
from app.cache.record import ProvenanceRecord, record_path
from app.cache.sidecar import sidecar_path
from app.fleet.candidates import candidate_folder
from app.fleet.trust import signed_bytes, trust_folder
from app.values import BackboneSpec, BuildConfig

__all__ = ["TIMING_SEEDED", "Promotion", "promote", "seed_timing_cache"]

TIMING_SEEDED = "c10.engine.timing_cache.seeded"


@dataclass(frozen=True)
class Promotion:
    """``digest`` set when promoted (``accuracy``: the gate's passing report, when it ran);
    ``reason`` says why not otherwise."""

    candidate: Path
    digest: str | None = None
    size: int | None = None
    reason: str = ""
    accuracy: dict[str, Any] | None = None


def promote(runtime: Any, cache_root: Path, sku: str, artifact: Path, expected: ProvenanceRecord,
            onnx_sha256: str, spec: BackboneSpec, build_config: BuildConfig,
            before_publish: Callable[[], None], *, public_key: Path | None,
            logger: logging.Logger) -> Promotion | None:
    """Publish the candidate of ``artifact`` for ``sku`` at ``artifact``; None when there is
    no candidate for it. ``expected``: the record the current inputs give; ``before_publish``
    runs once everything checked out, before the first byte is written (the pending record);
    ``public_key``: the key the candidates must be signed with (None: every one is refused)."""
    folder = candidate_folder(cache_root, sku)
    candidate = folder / "files" / artifact.name
    if not candidate.exists() and not candidate.is_symlink():
        return None
    trust = trust_folder(folder, sku, public_key)
    if trust.reason:
        return Promotion(candidate, reason=trust.reason)
    try:
        record = ProvenanceRecord.from_json(signed_bytes(folder, record_path(candidate).name, trust))
    except (OSError, ValueError) as exc:
        return Promotion(candidate, reason=f"its record: {exc}")
    current = dataclasses.replace(expected, onnx_sha256=onnx_sha256,
                                  engine_sha256=record.engine_sha256)
    changed = record.diff(current)
    if changed:
        return Promotion(candidate, reason="built from other inputs: " + ", ".join(changed))
    try:
        payload = signed_bytes(folder, artifact.name, trust)
    except (OSError, ValueError) as exc:
        return Promotion(candidate, reason=f"unreadable: {exc}")
    digest = trust.files[artifact.name].hex  # the hash signed_bytes just compared
    if digest != record.engine_sha256:
        return Promotion(candidate, reason="its record names other bytes than the signed manifest")
    check = getattr(runtime, "verify_artifact", None)
    if check is None:
        return Promotion(candidate, reason=f"the {runtime.name} backend cannot check a candidate")
    try:
        check(payload, spec.onnx_path, build_config)
    except Exception as exc:  # the backend's own words: a rejection, never a failed run
        return Promotion(candidate, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
    before_publish()
    atomic_write_bytes(artifact, payload)
    atomic_write_bytes(sidecar_path(artifact), digest.encode("ascii"))
    accuracy = None
    if spec.verify == "accuracy":
        try:
            accuracy = _gate(runtime.name, artifact, spec, build_config, logger, digest, onnx_sha256)
        except BaseException as exc:
            for path in (artifact, sidecar_path(artifact)):
                path.unlink(missing_ok=True)
            if not isinstance(exc, Exception):  # a cancelled run ends as it would in a build
                raise
            return Promotion(candidate, reason=f"the accuracy gate: {str(exc)[:300]}")
    return Promotion(candidate, digest, len(payload), accuracy=accuracy)


def _gate(backend: str, artifact: Path, spec: BackboneSpec, build_config: BuildConfig,
          logger: logging.Logger, digest: str, onnx_sha256: str) -> dict[str, Any]:
    from app.verify.gate import run_gate

    return run_gate(backend, artifact, spec, build_config, logger, engine_sha256=digest,
                    onnx_sha256=onnx_sha256)


def seed_timing_cache(runtime: Any, cache_root: Path, sku: str, public_key: Path | None,
                      logger: logging.Logger) -> Path | None:
    """Before a local build of ``sku``: when the timing cache that build reads is absent, copy
    the bundle's one of the same name there (the file the signed manifest lists, written
    atomically), so that the build skips the timings the reference robot measured. Returns the
    seeded path, else None. A file already there, whoever wrote it, is never replaced; a folder
    that is not trusted seeds nothing.

    Only a backend whose runtime names its timing cache (``timing_cache_path``: TensorRT) has one
    to seed. ONNX Runtime compiles without a timing cache, and bundles of its SKUs carry none:
    nothing is done for it."""
    where = getattr(runtime, "timing_cache_path", None)
    target: Path | None = where(cache_root) if where is not None else None
    if target is None or os.path.lexists(target):
        return None
    folder = candidate_folder(cache_root, sku)
    name = f"{target.parent.name}/{target.name}"
    trust = trust_folder(folder, sku, public_key)
    if name not in trust.files:
        return None
    try:
        payload = signed_bytes(folder, name, trust)
    except (OSError, ValueError):
        return None
    atomic_write_bytes(target, payload)
    events.emit(logger, logging.INFO, TIMING_SEEDED, f"timing cache {target.name} seeded from "
                f"the {sku} candidates", path=str(target), sku=sku, bytes=len(payload))
    return target
