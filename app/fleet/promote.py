"""Promotion: turn a candidate from a bundle (:mod:`app.fleet.candidates`) into this cache's
engine, after checking it on this host, instead of building it.

The candidates folder is untrusted input: ``pull`` and ``import``, which face the network,
write it and nothing else. A candidate is promoted only when its folder is still the bundle the
fleet signed (:mod:`app.fleet.trust`: the fleet's TUF release with ``fleet.trusted_root_file``,
the signature with ``fleet.public_key_file``, the manifest's digest), its record is the one
that manifest lists and was built on this host's SKU (the identity's SKU facts) from the same
ONNX bytes with the same settings and backend release (the provenance diff the reuse decision
uses), and its bytes are the ones the manifest lists.

Those bytes are checked as they are copied: the engine is opened once, each path component
relative to the one before without following a link (:func:`app.fleet.candidates
.open_candidate`), and read once into a new file of the cache (the atomic writer), each chunk
hashed and written; only when the digest of what was written is the signed one is the copy
renamed into place. The copies are made ahead, one after the other while the run promotes the
models before (:mod:`app.fleet.copies`); the verdict and the rename are made here. What is
published is therefore a file of one name that only this job wrote: a candidate rewritten
after it was hashed, hard-linked from elsewhere, or reached through a link is never what the
cache holds (each of these is a rejection or harmless).
The backend then loads the published copy and finds the ONNX model's inputs and outputs
(``verify_artifact``) and, for a model whose ``verify`` is ``accuracy``, the accuracy gate
checks it as a local build's; a copy that fails either is unpublished at once (its pending
record stays until the local build replaces it). Anything else is a rejection with its
reason; the caller then builds as before.

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
from app.cache.hashing import Sha256Sidecar, copy_hashed, sidecar_path
from app.cache.publish import atomic_write_bytes
from app.cache.record import ProvenanceRecord, record_path
from app.config import BackboneSpec
from app.errors import EngineInitError
from app.fleet.candidates import candidate_folder, open_candidate
from app.fleet.layout import Descriptor
from app.fleet.trust import signed_bytes, trust_folder
from app.values import BuildConfig
from app.verify.accuracy import run_gate

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface
    from app.fleet.copies import StagedCopy


@dataclass(frozen=True)
class Promotion:
    """``digest`` set when promoted (``accuracy``: the gate's passing report, when it ran);
    ``reason`` says why not otherwise."""

    candidate: Path
    digest: str | None = None
    size: int | None = None
    reason: str = ""
    accuracy: dict[str, Any] | None = None


def _vet(candidates: Path, sku: str, artifact: Path, expected: ProvenanceRecord, onnx_sha256: str,
         public_key: Path | None, trusted_root: Path | None = None, repository: str | None = None,
         ) -> Promotion | tuple[Path, ProvenanceRecord, Descriptor] | None:
    """The checks made before any byte of the engine is read: the signed folder, the record
    (signed, of these inputs), the manifest's entry. None: no candidate; a Promotion: its
    rejection; else the candidate's path, its record and its signed descriptor."""
    folder = candidate_folder(candidates, sku)
    candidate = folder / "files" / artifact.name
    if not os.path.lexists(candidate):
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
    if described.hex != record.engine_sha256:
        return Promotion(candidate, reason="its record names other bytes than the signed manifest")
    return candidate, record, described


def preview(candidates: Path, sku: str, artifact: Path, expected: ProvenanceRecord,
            onnx_sha256: str, public_key: Path | None, *, read_bytes: bool,
            trusted_root: Path | None = None, repository: str | None = None) -> Promotion | None:
    """What :func:`promote` would decide before the backend loads the engine, writing
    nothing (``status``, ``verify``): None without a candidate, else a Promotion whose
    ``digest`` is set when the candidate passes. ``read_bytes``: hash the engine too (else only
    its size is checked); ``trusted_root``, ``repository``: as for :func:`promote`."""
    vetted = _vet(candidates, sku, artifact, expected, onnx_sha256, public_key, trusted_root,
                  repository)
    if vetted is None or isinstance(vetted, Promotion):
        return vetted
    candidate, _, described = vetted
    try:
        source = open_candidate(candidates, sku, artifact.name)
    except OSError as exc:
        return Promotion(candidate, reason=f"unreadable: {exc.filename}: {exc.strerror}")
    try:
        size = os.fstat(source).st_size
        if size != described.size:
            return Promotion(candidate, reason=f"it holds {size} bytes, not the signed {described.size}")
        if read_bytes and copy_hashed(source) != (described.hex, described.size):
            return Promotion(candidate, reason="its bytes are not the ones the signed manifest lists")
    finally:
        os.close(source)
    return Promotion(candidate, described.hex, described.size)


def promote(runtime: InferenceRuntime, candidates: Path, sku: str, artifact: Path,
            expected: ProvenanceRecord, onnx_sha256: str, spec: BackboneSpec,
            build_config: BuildConfig, before_publish: Callable[[], None], *,
            public_key: Path | None, logger: logging.Logger,
            staged: StagedCopy | None = None, trusted_root: Path | None = None,
            repository: str | None = None) -> Promotion | None:
    """Publish the candidate of ``artifact`` for ``sku``, found under the candidates root
    ``candidates``, at ``artifact``; None when there is no candidate for it. ``expected``: the
    record the current inputs give; ``before_publish`` runs once the signed documents checked
    out, before the copy is published (the pending record); ``public_key``: the key the
    candidates must be signed with (None, and no ``trusted_root``: every one is refused);
    ``trusted_root``, ``repository``: the fleet's TUF anchor (:func:`app.fleet.trust.trust_folder`);
    ``staged``: the copy of the
    candidate made ahead (:mod:`app.fleet.copies`), published here only if it holds the signed
    bytes, else abandoned; None: made here."""
    try:
        return _promote(runtime, candidates, sku, artifact, expected, onnx_sha256, spec,
                        build_config, before_publish, public_key, logger, staged, trusted_root,
                        repository)
    finally:
        if staged is not None:  # not published: removed (after a publish, nothing is done)
            staged.abandon()


def _promote(runtime: InferenceRuntime, candidates: Path, sku: str, artifact: Path,
             expected: ProvenanceRecord, onnx_sha256: str, spec: BackboneSpec,
             build_config: BuildConfig, before_publish: Callable[[], None],
             public_key: Path | None, logger: logging.Logger,
             staged: StagedCopy | None, trusted_root: Path | None,
             repository: str | None) -> Promotion | None:
    vetted = _vet(candidates, sku, artifact, expected, onnx_sha256, public_key, trusted_root,
                  repository)
    if vetted is None or isinstance(vetted, Promotion):
        return vetted
    candidate, record, described = vetted
    if staged is None:  # none made ahead (the folder changed since the run began): now
        from app.fleet.copies import StagedCopy

        staged = StagedCopy(candidates, sku, artifact, described.size, None)
    staged.wait_copied()
    failed = _failed(staged, described)
    if failed:
        return Promotion(candidate, reason=failed)
    before_publish()
    staged.publish()
    # From here ``artifact`` is this job's own copy of the verified bytes.
    try:
        runtime.verify_artifact(artifact, _interface(record, spec), build_config)
    except Exception as exc:  # the backend's own words: a rejection, never a failed run
        _unpublish(artifact)
        return Promotion(candidate, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
    Sha256Sidecar.write(artifact, described.hex)
    accuracy = None
    if spec.verify == "accuracy":
        try:
            accuracy = run_gate(runtime, artifact, spec, build_config, logger,
                                engine_sha256=described.hex, onnx_sha256=onnx_sha256)
        except BaseException as exc:
            _unpublish(artifact)
            if not isinstance(exc, Exception):  # a cancelled run ends as it would in a build
                raise
            return Promotion(candidate, reason=f"the accuracy gate: {str(exc)[:300]}")
    return Promotion(candidate, described.hex, described.size, accuracy=accuracy)


def _failed(staged: StagedCopy, described: Descriptor) -> str:
    """Why the copy made ahead is not the signed engine ('' when it is); raises what is not
    the candidate's fault (the cache cannot be written, the run was cancelled)."""
    error = staged.error
    if isinstance(error, OSError) and not isinstance(error, EngineInitError):
        return f"unreadable: {error.filename}: {error.strerror}"  # a link, FIFO, device, gone
    if error is not None:
        raise error
    if staged.size != described.size:
        more = "more" if staged.size > described.size else "fewer"
        return f"it holds {more} bytes than the signed {described.size}"
    if staged.digest != described.hex:
        return "its bytes are not the ones the signed manifest lists"
    return ""


def _unpublish(artifact: Path) -> None:
    """Remove the copy this promotion published (and its sidecar): its pending record stays
    until the local build that follows replaces it."""
    for path in (artifact, sidecar_path(artifact)):
        path.unlink(missing_ok=True)


def seed_timing_cache(runtime: InferenceRuntime, cache_root: Path, candidates: Path, sku: str,
                      public_key: Path | None, logger: logging.Logger, *,
                      trusted_root: Path | None = None, repository: str | None = None,
                      ) -> Path | None:
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
    folder = candidate_folder(candidates, sku)
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
