"""The robot's side of the fleet's TUF metadata: refreshed at ``pull``, checked again at boot.

::

    <cache_root>/candidates/tuf/    the metadata this robot trusts (written by pull only)
    ├── root_history/<n>.root.json  every root version since the provisioned one
    ├── timestamp.json, snapshot.json, targets.json

``pull`` (:func:`refresh`) runs python-tuf's ``ngclient.Updater`` over the registry
(:class:`app.fleet.tuf_oci.OciFetcher`), starting from the root the robot was provisioned with
(``fleet.trusted_root_file``) and the metadata it trusted before, so that a registry serving an
older timestamp, snapshot or targets than this robot has seen (rollback), metadata past its
expiry (freeze), or anything not signed by the threshold of the current keys is refused. The
Updater works in a fresh folder this process fills from the trusted copies (each read through
the safe reader, bounded): it opens its files itself, so none of them may be something planted.
The folder replaces ``candidates/tuf`` only once the refresh verified.

At boot, :func:`verified_targets` checks the same chain again from the provisioned root,
offline (python-tuf's trusted-metadata set, which the Updater itself uses), expiry included:
the candidates volume is untrusted input.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, TargetFile, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet  # the Updater's own
from tuf.ngclient.config import EnvelopeType

from app.cache.fsread import UnsafeFileError, read_small
from app.cache.publish import atomic_write_bytes, fsync_dir, os_error_to_cache_error
from app.errors import BundleError, ConfigError, EngineInitError
from app.fleet.candidates import _lock, _sweep
from app.fleet.tuf_oci import METADATA_MAX, OciFetcher
from app.fleet.tuf_repo import check_bound

__all__ = ["TUF_FOLDER", "Trusted", "refresh", "release_of", "verified_targets"]

TUF_FOLDER = "tuf"
_ROLES = ("timestamp", "snapshot", "targets")
_MAX_ROOTS = 256
_HINT_ROOT = "set fleet.trusted_root_file to the fleet's 1.root.json (provisioned with the robot)"
_TS_ROLLBACK = re.compile(r"New timestamp version (\d+) must be >= (\d+)")


def _trusted_root(path: Path) -> bytes:
    """The provisioned root's bytes, once they are root metadata signed by its own threshold
    (ConfigError naming the file otherwise: it is configuration, not something pulled)."""
    try:
        raw = read_small(path, METADATA_MAX, follow_links=True)  # config files are often links
    except OSError as exc:
        raise ConfigError(f"fleet.trusted_root_file {path} cannot be read: {exc.strerror or exc}",
                          hint=_HINT_ROOT) from None
    try:
        md = Metadata[Root].from_bytes(raw)
        if not isinstance(md.signed, Root):
            raise ValueError(f"it is {md.signed.type} metadata, not root")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except (exceptions.RepositoryError, ValueError) as exc:
        raise ConfigError(f"fleet.trusted_root_file {path} is not the fleet's root metadata: {exc}",
                          hint=_HINT_ROOT) from None
    return raw


def _stored(folder: Path) -> dict[str, bytes]:
    """The trusted copies in ``folder`` (name relative to it: bytes); what is absent, or is
    not a small regular file, is left out (the Updater then fetches it again)."""
    out: dict[str, bytes] = {}
    names = [f"{r}.json" for r in _ROLES]
    names += [f"root_history/{v}.root.json" for v in range(2, _MAX_ROOTS)]
    for name in names:
        try:
            out[name] = read_small(folder / name, METADATA_MAX)
        except OSError:
            if name.startswith("root_history/"):
                break  # the chain stops at the first missing version
    return out


def _explain(exc: BaseException, repository: str, where: Path) -> EngineInitError:
    """One line for a refusal of python-tuf's, naming the versions of a rollback."""
    cause = exc.__cause__ if isinstance(exc, exceptions.DownloadError) else None
    if isinstance(cause, EngineInitError):  # the registry's own error, from the fetcher
        return cause
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        return BundleError(f"{repository} serves fleet metadata larger than allowed ({exc})",
                           hint="the registry's copy was altered: push the fleet's metadata again "
                           "with `engine-init fleet trust push`")
    if isinstance(exc, exceptions.DownloadError):
        from app.errors import RegistryError

        return RegistryError(f"the fleet metadata in {repository} cannot be read: {exc}",
                             hint="check the network and --repository; plain HTTP needs --insecure")
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return BundleError(f"the fleet metadata in {repository} has expired ({exc}): refused as "
                           "a frozen registry would be", hint="the operator re-signs it with "
                           "`engine-init fleet trust timestamp`; until then this robot keeps the "
                           "engines it already has and builds the others")
    if isinstance(exc, exceptions.BadVersionNumberError):
        got = _TS_ROLLBACK.search(str(exc))
        said = (f"the registry serves timestamp version {got[1]}, older than version {got[2]} "
                f"that this robot already trusts ({where})") if got else str(exc)
        return BundleError(f"rollback refused: {said}", hint="someone re-tagged older metadata "
                           "as current; push the newest metadata again")
    return BundleError(f"the fleet metadata in {repository} does not verify: "
                       f"{type(exc).__name__}: {exc}", hint="only metadata signed by the "
                       "threshold of the fleet's current keys is used; ask the operator to re-sign")


@dataclass(frozen=True)
class Trusted:
    """What a refresh verified: the targets, and the versions an operator checks against."""

    targets: Targets
    root_version: int
    timestamp_version: int
    expires: str  # the timestamp's expiry, ISO 8601 UTC


def refresh(repository: str, trusted_root: Path, candidates: Path, *, insecure: bool,
            lock_timeout_s: float = 600.0) -> Trusted:
    """Refresh this robot's trusted metadata from ``repository``; the verified targets.
    BundleError for a refusal (rollback, expiry, signatures, another repository),
    RegistryError when the registry cannot be read, ConfigError for the provisioned root."""
    bootstrap = _trusted_root(trusted_root)
    current = candidates / TUF_FOLDER
    work = candidates / f".{TUF_FOLDER}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        candidates.mkdir(exist_ok=True)
        if candidates.is_symlink():
            raise UnsafeFileError(errno.ELOOP, "a link", str(candidates))
        # One refresh at a time (a second waits, as for a SKU's bundle); what a killed one left
        # is swept under the lock.
        lock = _lock(candidates, TUF_FOLDER, lock_timeout_s)
    except OSError as exc:
        raise os_error_to_cache_error(exc, candidates) from None
    try:
        _sweep(candidates, TUF_FOLDER)
        try:
            work.mkdir()
            for name, raw in _stored(current).items():
                (work / name).parent.mkdir(exist_ok=True)
                atomic_write_bytes(work / name, raw)
        except OSError as exc:
            raise os_error_to_cache_error(exc, work) from None
        fetcher = OciFetcher(repository, insecure=insecure)
        try:
            updater = Updater(str(work), f"oci://{repository}/", fetcher=fetcher,
                              config=UpdaterConfig(max_root_rotations=_MAX_ROOTS), bootstrap=bootstrap)
            updater.refresh()
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise _explain(exc, repository, current) from None
        except ValueError as exc:  # the provisioned root is not TUF root metadata
            raise ConfigError(f"fleet.trusted_root_file {trusted_root}: {exc}", hint=_HINT_ROOT) from None
        roots = sorted(int(p.name.split(".")[0]) for p in (work / "root_history").iterdir())
        # The Updater verified these files, written by it into this process's own folder.
        root = Metadata[Root].from_bytes(read_small(
            work / "root_history" / f"{roots[-1]}.root.json", METADATA_MAX)).signed
        targets = Metadata[Targets].from_bytes(read_small(work / "targets.json", METADATA_MAX)).signed
        timestamp = Metadata[Timestamp].from_bytes(read_small(work / "timestamp.json", METADATA_MAX)).signed
        check_bound(repository, root, "root")
        check_bound(repository, targets, "targets")
        _publish(work, current)
        return Trusted(targets, root.version, timestamp.version, timestamp.expires.isoformat())
    finally:
        if work.is_dir() and not work.is_symlink():
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)  # closing drops the flock


def _publish(work: Path, current: Path) -> None:
    old = current.with_name(f".{TUF_FOLDER}.old-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        if os.path.lexists(current):
            os.rename(current, old)
        os.rename(work, current)
        fsync_dir(current.parent)
    except OSError as exc:
        raise os_error_to_cache_error(exc, current) from None
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.lexists(old):
        old.unlink()


def verified_targets(candidates: Path, trusted_root: Path, repository: str | None) -> Targets:
    """The targets of the metadata stored in ``candidates``, verified offline from the
    provisioned root (expiry included) and bound to ``repository`` when it is given.
    BundleError naming why otherwise."""
    folder = candidates / TUF_FOLDER
    stored = _stored(folder)
    if not all(f"{r}.json" in stored for r in _ROLES):
        raise BundleError(f"no verified fleet metadata in {folder}", hint="run `engine-init pull` "
                          "(a bundle stored by an older pull or by import carries none)")
    try:
        trusted = TrustedMetadataSet(_trusted_root(trusted_root), EnvelopeType.METADATA)
        for version in range(2, _MAX_ROOTS):
            raw = stored.get(f"root_history/{version}.root.json")
            if raw is None:
                break
            trusted.update_root(raw)
        trusted.update_timestamp(stored["timestamp.json"])
        trusted.update_snapshot(stored["snapshot.json"])
        targets = trusted.update_delegated_targets(stored["targets.json"], "targets", "root")
    except (exceptions.RepositoryError, ValueError) as exc:
        raise _explain(exc, str(folder), folder) from None
    if repository is not None:
        check_bound(repository, trusted.root, "root")
        check_bound(repository, targets, "targets")
    return targets


def release_of(targets: Targets, sku: str) -> tuple[TargetFile, dict[str, TargetFile]] | None:
    """The released signed index of ``sku`` and its files (name: target), or None when the
    fleet released nothing for it."""
    index = targets.targets.get(f"{sku}/index.json")
    if index is None:
        return None
    prefix = f"{sku}/files/"
    return index, {p.removeprefix(prefix): t for p, t in targets.targets.items() if p.startswith(prefix)}
