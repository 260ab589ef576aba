"""Promotion: turn a candidate from a bundle (:mod:`app.fleet.candidates`) into this cache's
engine, after checking it on this host, instead of building it.

A candidate is promoted only when its folder is still the bundle the fleet signed
(:mod:`app.fleet.trust`: the fleet's TUF release with ``fleet.trusted_root_file``, the signature
with ``fleet.public_key_file``, the manifest's digest),
its record and bytes are the files that manifest lists, the record was built on this host's SKU
(the identity's SKU facts) from the same ONNX bytes with the same settings and backend release
(the provenance diff the reuse decision uses), the backend loads it and finds the ONNX model's
inputs and outputs (``verify_artifact``), and, for a model whose ``verify`` is ``accuracy``,
it passes the accuracy gate as a local build must. The engine's bytes are hashed once (by the
early-hashing threads while the job starts, or here), and the candidate file itself then
becomes the engine: a hard link when it is still the file that was hashed (nothing written, no
space taken twice), else a copy hashed again on the way. The gate runs on the published engine,
and a candidate that fails it is unpublished at once (its pending record stays until the local
build replaces it), so that no engine that failed the gate remains published. Anything else is
a rejection with its reason; the caller then builds as before.

Before such a local build, :func:`seed_timing_cache` gives it the bundle's TensorRT timing cache.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events
from app.backends.base import InferenceRuntime
from app.cache.hashing import EarlyDigests, copy_hashed, hash_opened
from app.cache.publish import atomic_link, atomic_write_bytes, atomic_writer
from app.cache.record import ProvenanceRecord, record_path
from app.cache.sidecar import Sha256Sidecar, sidecar_path
from app.fleet.candidates import candidate_folder
from app.fleet.trust import signed_bytes, trust_folder
from app.request import BackboneSpec
from app.values import BuildConfig

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface

__all__ = ["Promotion", "promote", "seed_timing_cache"]


@dataclass(frozen=True)
class Promotion:
    """``digest`` set when promoted (``accuracy``: the gate's passing report, when it ran);
    ``reason`` says why not otherwise."""

    candidate: Path
    digest: str | None = None
    size: int | None = None
    reason: str = ""
    accuracy: dict[str, Any] | None = None


def promote(runtime: InferenceRuntime, cache_root: Path, sku: str, artifact: Path, expected: ProvenanceRecord,
            onnx_sha256: str, spec: BackboneSpec, build_config: BuildConfig,
            before_publish: Callable[[], None], *, public_key: Path | None,
            logger: logging.Logger, early: EarlyDigests | None = None,
            trusted_root: Path | None = None, repository: str | None = None) -> Promotion | None:
    """Publish the candidate of ``artifact`` for ``sku`` at ``artifact``; None when there is
    no candidate for it. ``expected``: the record the current inputs give; ``before_publish``
    runs once everything checked out, before the first byte is written (the pending record);
    ``public_key``: the key the candidates must be signed with (None, and no ``trusted_root``:
    every one is refused);
    ``early``: digests hashed since the run started (:mod:`app.cache.prehash`);
    ``trusted_root``, ``repository``: the fleet's TUF anchor (:func:`app.fleet.trust.trust_folder`)."""
    folder = candidate_folder(cache_root, sku)
    candidate = folder / "files" / artifact.name
    if not candidate.exists() and not candidate.is_symlink():
        return None
    trust = trust_folder(folder, sku, public_key, trusted_root, repository)
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
    described = trust.files.get(artifact.name)
    if described is None:
        return Promotion(candidate, reason="the signed manifest does not list it")
    try:
        digest, read_stat = hash_opened(candidate, early, described.size)
    except (OSError, ValueError) as exc:
        return Promotion(candidate, reason=f"unreadable: {exc}")
    if digest != described.hex:
        return Promotion(candidate, reason="its bytes are not the ones the signed manifest lists")
    if digest != record.engine_sha256:
        return Promotion(candidate, reason="its record names other bytes than the signed manifest")
    try:
        runtime.verify_artifact(candidate, _interface(record, spec), build_config)
    except Exception as exc:  # the backend's own words: a rejection, never a failed run
        return Promotion(candidate, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
    before_publish()
    if not atomic_link(candidate, artifact, lambda st: _same(st, read_stat)):
        try:
            _copy(candidate, artifact, digest)
        except _ChangedError:
            return Promotion(candidate, reason="it changed while it was checked")
    Sha256Sidecar.write(artifact, digest)
    accuracy = None
    if spec.verify == "accuracy":
        try:
            accuracy = _gate(runtime, artifact, spec, build_config, logger, digest, onnx_sha256)
        except BaseException as exc:
            for path in (artifact, sidecar_path(artifact)):
                path.unlink(missing_ok=True)
            if not isinstance(exc, Exception):  # a cancelled run ends as it would in a build
                raise
            return Promotion(candidate, reason=f"the accuracy gate: {str(exc)[:300]}")
    return Promotion(candidate, digest, described.size, accuracy=accuracy)


def _gate(backend: InferenceRuntime, artifact: Path, spec: BackboneSpec, build_config: BuildConfig,
          logger: logging.Logger, digest: str, onnx_sha256: str) -> dict[str, Any]:
    from app.verify.gate import run_gate

    return run_gate(backend, artifact, spec, build_config, logger, engine_sha256=digest,
                    onnx_sha256=onnx_sha256)


def seed_timing_cache(runtime: InferenceRuntime, cache_root: Path, sku: str, public_key: Path | None,
                      logger: logging.Logger, *, trusted_root: Path | None = None,
                      repository: str | None = None) -> Path | None:
    """Before a local build of ``sku``: when the timing cache that build reads is absent, copy
    the bundle's one of the same name there (the file the signed manifest lists, written
    atomically), so that the build skips the timings the reference robot measured. Returns the
    seeded path, else None. A file already there, whoever wrote it, is never replaced; a folder
    that is not trusted seeds nothing.

    Only a backend whose runtime names its timing cache (``timing_cache_path``: TensorRT) has one
    to seed. ONNX Runtime compiles without a timing cache, and bundles of its SKUs carry none:
    nothing is done for it."""
    target = runtime.timing_cache_path(cache_root)
    if target is None or os.path.lexists(target):
        return None
    folder = candidate_folder(cache_root, sku)
    name = f"{target.parent.name}/{target.name}"
    trust = trust_folder(folder, sku, public_key, trusted_root, repository)
    if name not in trust.files:
        return None
    try:
        payload = signed_bytes(folder, name, trust)
    except (OSError, ValueError):
        return None
    atomic_write_bytes(target, payload)
    events.emit(logger, logging.INFO, events.TIMING_SEEDED, f"timing cache {target.name} seeded from "
                f"the {sku} candidates", path=str(target), sku=sku, bytes=len(payload))
    return target


def _interface(record: ProvenanceRecord, spec: BackboneSpec) -> ModelInterface:
    """The ONNX model's inputs and outputs: from the candidate's signed record, which was
    built from these very ONNX bytes (its ``onnx_sha256`` is this robot's), else read with
    ``onnx`` (a record from before ``onnx_io``)."""
    from app.backends.onnx_model import ModelInterface, inspect_model

    if record.onnx_io is not None:
        return ModelInterface.from_json(record.onnx_io, spec.onnx_path)
    return inspect_model(spec.onnx_path, spec.model_name)


class _ChangedError(Exception):
    pass


def _copy(candidate: Path, artifact: Path, digest: str) -> None:
    """Publish a copy of ``candidate`` (where no hard link can be made); _ChangedError, with
    nothing published, unless the bytes copied are the ``digest`` checked."""
    with atomic_writer(artifact) as out:
        if copy_hashed(candidate, out.fileno())[0] != digest:
            raise _ChangedError


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)
