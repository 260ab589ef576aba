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

At boot, :func:`app.fleet.tuf_verify.verified_targets` checks the stored chain again, offline.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from app.cache.fsread import read_small
from app.cache.names import TUF_FOLDER
from app.cache.publish import atomic_write_bytes, fsync_dir, os_error_to_cache_error, temp_name
from app.errors import ConfigError
from app.fleet.candidates import _sweep, lock_root
from app.fleet.registry import Limits
from app.fleet.tuf_oci import OciFetcher
from app.fleet.tuf_verify import (
    MAX_ROOTS,
    METADATA_MAX,
    ROOT_HINT,
    check_bound,
    explain,
    read_trusted_root,
    releasing,
    stored,
)


@dataclass(frozen=True)
class Trusted:
    """What a refresh verified: the targets, and the versions an operator checks against."""

    targets: Targets
    root_version: int
    timestamp_version: int
    expires: str  # the timestamp's expiry, ISO 8601 UTC


def refresh(repository: str, trusted_root: Path, candidates: Path, sku: str, *, insecure: bool,
            lock_timeout_s: float = 600.0, limits: Limits | None = None) -> Trusted:
    """Refresh this robot's trusted metadata from ``repository``; the verified targets that
    release ``sku`` (the top-level ones, or its delegated role's).
    BundleError for a refusal (rollback, expiry, signatures, another repository),
    RegistryError when the registry cannot be read or is too slow for ``limits`` (the pull's),
    ConfigError for the provisioned root."""
    bootstrap = read_trusted_root(trusted_root)
    current = candidates / TUF_FOLDER
    work = temp_name(current)
    # One refresh at a time (a second waits, as for a SKU's bundle); what a killed one left
    # is swept under the lock.
    lock = lock_root(candidates, TUF_FOLDER, lock_timeout_s)
    try:
        _sweep(candidates, TUF_FOLDER)
        try:
            work.mkdir()
            for name, raw in stored(current).items():
                (work / name).parent.mkdir(exist_ok=True)
                atomic_write_bytes(work / name, raw)
        except OSError as exc:
            raise os_error_to_cache_error(exc, work) from None
        fetcher = OciFetcher(repository, insecure=insecure, limits=limits)
        try:
            updater = Updater(str(work), f"oci://{repository}/", fetcher=fetcher,
                              config=UpdaterConfig(max_root_rotations=MAX_ROOTS), bootstrap=bootstrap)
            updater.refresh()
            updater.get_targetinfo(f"{sku}/index.json")  # loads the SKU's delegated role, if any
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise explain(exc, repository, current, insecure=insecure) from None
        except ValueError as exc:  # the provisioned root is not TUF root metadata
            raise ConfigError(f"fleet.trusted_root_file {trusted_root}: {exc}", hint=ROOT_HINT) from None
        roots = sorted(int(p.name.split(".")[0]) for p in (work / "root_history").iterdir())
        # The Updater verified these files, written by it into this process's own folder.
        root = Metadata[Root].from_bytes(read_small(
            work / "root_history" / f"{roots[-1]}.root.json", METADATA_MAX)).signed
        top = _verified(work, "targets")
        try:
            targets = releasing(top, sku, lambda name: _verified(work, name))
        except exceptions.RepositoryError as exc:
            raise explain(exc, repository, current, insecure=insecure) from None
        timestamp = Metadata[Timestamp].from_bytes(read_small(work / "timestamp.json", METADATA_MAX)).signed
        check_bound(repository, root, "root")
        for signed in {id(top): top, id(targets): targets}.values():
            check_bound(repository, signed, "targets")
        _publish(work, current)
        return Trusted(targets, root.version, timestamp.version, timestamp.expires.isoformat())
    finally:
        if work.is_dir() and not work.is_symlink():
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)  # closing drops the flock


def _verified(work: Path, role: str) -> Targets:
    """Targets metadata the Updater verified and wrote into ``work``."""
    signed: Targets = Metadata[Targets].from_bytes(read_small(work / f"{role}.json", METADATA_MAX)).signed
    return signed


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
