"""Promotion: a candidate checked on this host and published as this cache's engine instead of a
build (docs/fleet.md#the-trust-model, checks 1 to 5, and the copies made ahead). Any refusal is a
rejection: the caller builds."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import events
from app.backends.base import InferenceRuntime
from app.cache.hashing import Sha256Sidecar, copy_hashed, sidecar_path
from app.cache.publish import atomic_write_bytes, atomic_writer
from app.cache.record import ProvenanceRecord, record_path
from app.cancel import CANCEL, cancelled_error
from app.config import BackboneSpec
from app.errors import EngineInitError
from app.fleet.candidates import open_candidate, signed_bytes, trust_folder
from app.fleet.layout import Descriptor
from app.values import BuildConfig
from app.verify.accuracy import run_gate

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface


@dataclasses.dataclass(frozen=True)
class Promotion:
    """``digest`` set when promoted (``accuracy``: the gate's passing report, when it ran);
    ``reason`` says why not otherwise."""

    candidate: Path
    digest: str | None = None
    size: int | None = None
    reason: str = ""
    accuracy: dict[str, Any] | None = None


class _Abandoned(Exception):
    pass


class StagedCopy:
    """One candidate copied ahead to a temp file beside ``artifact``, hashed while written, and
    renamed into place only by :meth:`publish`."""

    def __init__(self, candidates: Path, sku: str, artifact: Path, size: int,
                 before: StagedCopy | None) -> None:
        self.digest: str | None = None
        self.size = 0
        #: What stopped the copy or its publishing; None when it went through.
        self.error: BaseException | None = None
        self._copied = threading.Event()
        self._decided = threading.Event()
        self._done = threading.Event()
        self._publish = False
        threading.Thread(target=self._run, args=(candidates, sku, artifact, size, before),
                         name=f"copy-{artifact.name}", daemon=True).start()

    def _run(self, candidates: Path, sku: str, artifact: Path, size: int,
             before: StagedCopy | None) -> None:
        try:
            if before is not None:
                before._copied.wait()  # one copy at a time: the first promoted is ready first
            source = open_candidate(candidates, sku, artifact.name)
            try:
                with atomic_writer(artifact, size_hint=size) as out:
                    self.digest, self.size = copy_hashed(source, out.fileno(), limit=size)
                    os.fsync(out.fileno())  # now, while the run works: publishing then waits less
                    self._copied.set()
                    while not self._decided.wait(0.05):
                        if CANCEL.is_set():
                            raise cancelled_error()
                    if not self._publish:
                        raise _Abandoned
            finally:
                os.close(source)
        except _Abandoned:
            pass
        except BaseException as exc:  # handed to the promotion, which decides what it means
            self.error = exc
        finally:
            self._copied.set()
            self._done.set()

    def wait_copied(self) -> None:
        self._copied.wait()

    def publish(self) -> None:
        """Rename the copy into place (raises what stopped it)."""
        self._publish = True
        self._decided.set()
        self._done.wait()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Remove the copy (at once if copied; else as soon as its copy ends)."""
        self._decided.set()


class EarlyCopies:
    """The copies of a run's candidates, by artifact, started in the order given (the run's)."""

    def __init__(self, candidates: Path, sku: str, public_key: Path | None,
                 artifacts: list[Path]) -> None:
        self._copies: dict[Path, StagedCopy] = {}
        folder = candidates / sku
        trust = trust_folder(folder, sku, public_key)
        if trust.reason:
            return  # promotion rejects every candidate of the folder, with that reason
        before = None
        for artifact in artifacts:
            described = trust.files.get(artifact.name)
            if described is None or not os.path.lexists(folder / "files" / artifact.name):
                continue
            before = StagedCopy(candidates, sku, artifact, described.size, before)
            self._copies[artifact] = before

    def take(self, artifact: Path) -> StagedCopy | None:
        return self._copies.pop(artifact, None)

    def abandon(self) -> None:
        """Remove every copy no promotion took (the run is ending)."""
        for copy in self._copies.values():
            copy.abandon()
        self._copies.clear()


def _vet(candidates: Path, sku: str, artifact: Path, expected: ProvenanceRecord, onnx_sha256: str,
         public_key: Path | None, trusted_root: Path | None = None, repository: str | None = None,
         ) -> Promotion | tuple[Path, ProvenanceRecord, Descriptor] | None:
    """The checks made before any byte of the engine is read: None without a candidate, a
    rejection, or what promotion goes on with."""
    folder = candidates / sku
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
    """What :func:`promote` would decide before the backend loads the engine, writing nothing
    (``status``, ``verify``); ``read_bytes``: hash the engine too, else only its size is checked."""
    vetted = _vet(candidates, sku, artifact, expected, onnx_sha256, public_key, trusted_root, repository)
    if vetted is None or isinstance(vetted, Promotion):
        return vetted
    candidate, _, described = vetted
    try:
        source = open_candidate(candidates, sku, artifact.name)
    except OSError as exc:
        return Promotion(candidate, reason=_differs(described, 0, None, exc))
    try:
        digest, size = None, os.fstat(source).st_size
        if read_bytes and size == described.size:
            digest, size = copy_hashed(source)
    finally:
        os.close(source)
    why = _differs(described, size, digest)
    return Promotion(candidate, reason=why) if why else Promotion(candidate, described.hex, described.size)


def promote(runtime: InferenceRuntime, candidates: Path, sku: str, artifact: Path,
            expected: ProvenanceRecord, onnx_sha256: str, spec: BackboneSpec,
            build_config: BuildConfig, before_publish: Callable[[], None], *,
            public_key: Path | None, logger: logging.Logger,
            staged: StagedCopy | None = None, trusted_root: Path | None = None,
            repository: str | None = None) -> Promotion | None:
    """Publish the candidate of ``artifact`` (None when there is none). ``expected``: the record
    the current inputs give; ``before_publish`` (the pending record) runs before the copy is
    published; ``staged``: the copy made ahead (None: made here). A copy not published is removed."""
    try:
        vetted = _vet(candidates, sku, artifact, expected, onnx_sha256, public_key, trusted_root, repository)
        if vetted is None or isinstance(vetted, Promotion):
            return vetted
        candidate, record, described = vetted
        if staged is None:  # none made ahead (the folder changed since the run began): now
            staged = StagedCopy(candidates, sku, artifact, described.size, None)
        staged.wait_copied()
        failed = _differs(described, staged.size, staged.digest, staged.error)
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
    finally:
        if staged is not None:  # not published: removed (after a publish, nothing is done)
            staged.abandon()


def _differs(described: Descriptor, size: int, digest: str | None,
             error: BaseException | None = None) -> str:
    """Why the candidate's bytes (``digest`` None: not read) are not the signed engine ('' when
    they are); raises an ``error`` that is not the candidate's fault (the cache cannot be
    written, the run was cancelled)."""
    if isinstance(error, OSError) and not isinstance(error, EngineInitError):
        return f"unreadable: {error.filename}: {error.strerror}"  # a link, FIFO, device, gone
    if error is not None:
        raise error
    if size != described.size:
        more = "more" if size > described.size else "fewer"
        return f"it holds {more} bytes than the signed {described.size}"
    if digest is not None and digest != described.hex:
        return "its bytes are not the ones the signed manifest lists"
    return ""


def _unpublish(artifact: Path) -> None:  # the pending record stays for the build
    for path in (artifact, sidecar_path(artifact)):
        path.unlink(missing_ok=True)


def seed_timing_cache(runtime: InferenceRuntime, cache_root: Path, candidates: Path, sku: str,
                      public_key: Path | None, logger: logging.Logger, *,
                      trusted_root: Path | None = None, repository: str | None = None,
                      ) -> Path | None:
    """Before a local build of ``sku``: when the timing cache that build reads is absent, write
    the trusted bundle's one there (the seeded path, else None; never over an existing file)."""
    target = runtime.timing_cache_path(cache_root)
    if target is None or os.path.lexists(target):
        return None
    folder = candidates / sku
    name = f"{target.parent.name}/{target.name}"
    trust = trust_folder(folder, sku, public_key, trusted_root, repository)
    try:  # ValueError too when the trusted manifest lists no timing cache of that name
        payload = signed_bytes(folder, name, trust)
    except (OSError, ValueError):
        return None
    atomic_write_bytes(target, payload)
    events.emit(logger, logging.INFO, events.TIMING_SEEDED, f"timing cache {target.name} seeded from "
                f"the {sku} candidates", path=str(target), sku=sku, bytes=len(payload))
    return target


def _interface(record: ProvenanceRecord, spec: BackboneSpec) -> ModelInterface:
    """The ONNX model's I/O: from the signed record (of these very ONNX bytes), else with ``onnx``."""
    from app.backends.onnx_model import ModelInterface, inspect_model

    if record.onnx_io is not None:
        return ModelInterface.from_json(record.onnx_io, spec.onnx_path)
    return inspect_model(spec.onnx_path, spec.model_name)
