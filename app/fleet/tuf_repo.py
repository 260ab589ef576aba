"""The operator's side of the fleet's TUF metadata: the folder the ``fleet trust`` commands sign
and push (docs/fleet-trust.md#operator-commands; the roles: docs/fleet-trust.md#the-model)."""

from __future__ import annotations

import copy
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from app.cache.fsread import read_small
from app.cache.publish import atomic_write_bytes
from app.cancel import checkpoint
from app.errors import ConfigError
from app.fleet import ROLES, layout
from app.fleet.bundle import KeyFile
from app.fleet.tuf_verify import BINDING, METADATA_MAX, binding_of, role_of

_VERSIONED = re.compile(r"([1-9][0-9]{0,8})\.(root|targets|snapshot|sku-[0-9a-f]{16})\.json")
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=365),
          "snapshot": timedelta(days=7), "timestamp": timedelta(days=7)}


def _expires(role: str, days: float | None) -> datetime:
    span = EXPIRY[role] if days is None else timedelta(days=days)
    return (datetime.now(timezone.utc) + span).replace(microsecond=0)


class Repo:
    """The newest version of each role, and the files a command wrote (``written``, in the
    order robots must see them pushed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[tuple[str, bytes]] = []
        self.md: dict[str, Metadata[Any]] = {}

    @classmethod
    def load(cls, folder: Path) -> Repo:
        repo = cls(folder)
        try:
            names = os.listdir(folder)
        except OSError as exc:
            raise ConfigError(f"the fleet metadata folder {folder} cannot be read: {exc.strerror}",
                              hint="name the folder `engine-init fleet trust init` wrote") from None
        newest: dict[str, int] = {}
        for name in names:
            match = _VERSIONED.fullmatch(name)
            if match:
                newest[match[2]] = max(newest.get(match[2], 0), int(match[1]))
        if not {"root", "targets", "snapshot"} <= set(newest) or "timestamp.json" not in names:
            raise ConfigError(f"{folder} holds no fleet metadata (root, targets, snapshot, timestamp)",
                              hint="create it with `engine-init fleet trust init`")
        for role in newest:  # the top-level roles, and each SKU's delegated one
            repo.md[role] = repo._read(f"{newest[role]}.{role}.json")
        repo.md["timestamp"] = repo._read("timestamp.json")
        return repo

    def _read(self, name: str) -> Metadata[Any]:
        try:
            return Metadata.from_bytes(read_small(self.folder / name, METADATA_MAX))
        except (OSError, DeserializationError) as exc:
            raise ConfigError(f"{self.folder / name} is not readable TUF metadata: {exc}",
                              hint="restore the metadata folder from the registry or a backup") from None

    def all_files(self) -> list[tuple[str, bytes]]:
        """Every file of the folder, in the order robots must see them pushed."""
        def order(name: str) -> tuple[int, int]:
            match = _VERSIONED.fullmatch(name)
            if match is None:
                return (3, 0)  # timestamp.json, last
            return ({"root": 0, "snapshot": 2}.get(match[2], 1), int(match[1]))

        names = [n for n in os.listdir(self.folder) if _VERSIONED.fullmatch(n) or n == "timestamp.json"]
        return [(n, read_small(self.folder / n, METADATA_MAX)) for n in sorted(names, key=order)]

    @property
    def root(self) -> Root:
        root: Root = self.md["root"].signed
        return root

    @property
    def repository(self) -> str:
        return binding_of(self.root) or "?"

    def _sign(self, role: str, md: Metadata[Any], keys: list[KeyFile], root: Root | Targets) -> None:
        """Sign ``md`` with the given private keys of ``role`` under its delegator (``root``,
        or the targets delegating a SKU's role); ConfigError short of its threshold."""
        md.signatures.clear()
        wanted = root.get_delegated_role(role)
        for k in keys:
            if k.signer is not None and k.key.keyid in wanted.keyids:
                md.sign(k.signer, append=True)
        got = len(md.signatures)
        paths = getattr(wanted, "paths", None)
        if paths:  # a SKU's role: say which SKU
            role = f"{role} (the role of {paths[0].split('/')[0]})"
        if got < wanted.threshold:
            raise ConfigError(f"{role} needs {wanted.threshold} signature(s) of its "
                              f"{len(wanted.keyids)} key(s); the private key files given hold {got}",
                              hint=f"pass more of the {role} role's private key files with --key")

    def _write(self, name: str, md: Metadata[Any]) -> None:  # for save(), once all are signed
        self.written.append((name, md.to_bytes()))

    def save(self) -> None:
        """Write what the command made, each file atomically, in order. A signal before the
        first file writes none; once begun, all are written (``after_cancel``): a new root
        without the roles it signs would be a folder half changed."""
        checkpoint()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {self.folder}: {exc.strerror}",
                              hint="choose a writable folder for the fleet's metadata") from None
        for name, raw in self.written:
            atomic_write_bytes(self.folder / name, raw, after_cancel=True)

    def init(self, repository: str, root_keys: list[KeyFile], threshold: int,
             targets_key: KeyFile, online_key: KeyFile, *, timestamp_days: float | None) -> None:
        """Version 1 of every role, signed; nothing is written unless every signature is made."""
        from app.fleet import check_repository

        check_repository(repository)  # bound into every version: a name no registry serves is 78 now
        if not 1 <= threshold <= len(root_keys):
            raise ConfigError(f"a root threshold of {threshold} with {len(root_keys)} root key(s)",
                              hint="give at least as many --root-key files as the threshold, e.g. 3 for 2")
        if os.path.lexists(self.folder / "1.root.json"):
            raise ConfigError(f"{self.folder} already holds fleet metadata",
                              hint="change keys with `fleet trust add-key | revoke-key | rotate-key`")
        root = Root(expires=_expires("root", None), consistent_snapshot=True,
                    unrecognized_fields={BINDING: repository})
        for k in root_keys:
            root.add_key(k.key, "root")
        root.add_key(targets_key.key, "targets")
        for role in ("snapshot", "timestamp"):
            root.add_key(online_key.key, role)
        root.roles["root"].threshold = threshold
        keys = [*root_keys, targets_key, online_key]
        self.md["root"] = Metadata(root)
        self.md["targets"] = Metadata(Targets(expires=_expires("targets", None),
                                              unrecognized_fields={BINDING: repository}))
        self.md["snapshot"] = Metadata(Snapshot(expires=_expires("snapshot", timestamp_days)))
        self.md["timestamp"] = Metadata(Timestamp(expires=_expires("timestamp", timestamp_days)))
        for role in ROLES:
            self._sign(role, self.md[role], keys, root)
        for role in ("root", "targets", "snapshot"):
            self._write(f"1.{role}.json", self.md[role])
        self._write("timestamp.json", self.md["timestamp"])

    def release(self, sku: str, index: layout.Descriptor, files: list[tuple[str, layout.Descriptor]],
                keys: list[KeyFile], *, days: float | None, timestamp_days: float | None) -> int:
        """A new version (returned) of the targets that release ``sku`` naming this index and
        these files instead of its previous release, then snapshot and timestamp."""
        role = role_of(sku) if role_of(sku) in self.md else "targets"
        targets: Targets = self.md[role].signed
        for path in [p for p in targets.targets if p.startswith(f"{sku}/")]:
            del targets.targets[path]
        for path, described in ((f"{sku}/index.json", index),
                                *((f"{sku}/files/{name}", d) for name, d in files)):
            targets.targets[path] = TargetFile(described.size, {"sha256": described.hex}, path)
        return self._bump_targets(keys, role, days=days, timestamp_days=timestamp_days)

    def delegate(self, sku: str, sku_keys: list[KeyFile], threshold: int, keys: list[KeyFile], *,
                 timestamp_days: float | None) -> int:
        """Give ``sku``'s releases (its current one moved in) to its own role, signed by
        ``threshold`` of ``sku_keys`` (replaced when delegated again); the role's version."""
        if not 1 <= threshold <= len(sku_keys):
            raise ConfigError(f"a threshold of {threshold} with {len(sku_keys)} key(s) for {sku}",
                              hint="give at least as many --sku-key files as --threshold")
        name = role_of(sku)
        top: Targets = self.md["targets"].signed
        if top.delegations is None:
            top.delegations = Delegations(keys={}, roles={})
        assert top.delegations.roles is not None  # (never succinct roles here)
        # One pattern per depth: python-tuf's "*" never crosses a "/".
        top.delegations.roles[name] = DelegatedRole(
            name, [], threshold, True, [f"{sku}/*", f"{sku}/files/*", f"{sku}/files/*/*"])
        for k in sku_keys:
            top.add_key(k.key, name)
        created = name not in self.md
        if created:
            self.md[name] = Metadata(Targets(expires=_expires("targets", None)))
        moved = {p: t for p, t in top.targets.items() if p.startswith(f"{sku}/")}
        for path in moved:
            del top.targets[path]
        self.md[name].signed.targets.update(moved)
        version = self._bump_targets([*keys, *sku_keys], name, days=None, timestamp_days=None,
                                     then=False, bump=not created)
        self._bump_targets(keys, "targets", days=None, timestamp_days=timestamp_days)
        return version

    def _bump_targets(self, keys: list[KeyFile], role: str = "targets", *, days: float | None,
                      timestamp_days: float | None, then: bool = True, bump: bool = True) -> int:
        """Sign ``role`` (``bump``: as a new version), then (``then``) snapshot and timestamp."""
        targets: Targets = self.md[role].signed
        targets.version += bump
        targets.expires = _expires("targets", days)
        targets.unrecognized_fields[BINDING] = self.repository
        self._sign(role, self.md[role], keys, self.root if role == "targets" else self.md["targets"].signed)
        self._write(f"{targets.version}.{role}.json", self.md[role])
        if then:
            self.timestamp(keys, days=timestamp_days)
        return targets.version

    def timestamp(self, keys: list[KeyFile], *, days: float | None) -> None:
        """New snapshot and timestamp versions (the online key), expiring in ``days``."""
        snapshot: Snapshot = self.md["snapshot"].signed
        for role, md in self.md.items():
            if role == "targets" or role.startswith("sku-"):
                snapshot.meta[f"{role}.json"] = MetaFile(md.signed.version)
        snapshot.version += 1
        snapshot.expires = _expires("snapshot", days)
        self._sign("snapshot", self.md["snapshot"], keys, self.root)
        timestamp: Timestamp = self.md["timestamp"].signed
        timestamp.snapshot_meta = MetaFile(snapshot.version)
        timestamp.version += 1
        timestamp.expires = _expires("timestamp", days)
        self._sign("timestamp", self.md["timestamp"], keys, self.root)
        self._write(f"{snapshot.version}.snapshot.json", self.md["snapshot"])
        self._write("timestamp.json", self.md["timestamp"])

    def change_keys(self, role: str, keys: list[KeyFile], *, add: list[KeyFile],
                    remove: list[KeyFile], threshold: int | None, timestamp_days: float | None) -> int:
        """A new root version (returned) with ``add``'s keys given to ``role`` and ``remove``'s
        taken from it, signed by the threshold of the old root and of the new one."""
        old: Root = self.md["root"].signed
        new = copy.deepcopy(old)  # (from_dict(to_dict()) would share the roles' key lists)
        for k in remove:
            if k.key.keyid not in new.roles[role].keyids:
                raise ConfigError(f"{k.path} is not a {role} key of this fleet",
                                  hint=f"the {role} keys are {', '.join(sorted(new.roles[role].keyids))}")
            new.revoke_key(k.key.keyid, role)
        for k in add:
            new.add_key(k.key, role)
        if threshold is not None:
            new.roles[role].threshold = threshold
        wanted = new.roles[role]
        if not 1 <= wanted.threshold <= len(wanted.keyids):
            raise ConfigError(f"{role} would have {len(wanted.keyids)} key(s) for a threshold of "
                              f"{wanted.threshold}", hint="add keys before removing, or lower --threshold")
        new.version = old.version + 1
        new.expires = _expires("root", None)
        md: Metadata[Root] = Metadata(new)
        self._sign("root", md, keys, old)  # the old threshold...
        kept = dict(md.signatures)
        self._sign("root", md, keys, new)  # ...and the new one, over the same bytes
        md.signatures.update(kept)
        self.md["root"] = md
        self._write(f"{new.version}.root.json", md)
        # A role whose metadata no longer verifies under the new root (a key revoked, a
        # threshold raised) is signed again by its keys now, with what depends on it.
        current = self.md[role]
        if role != "root" and not new.get_verification_result(role, current.signed_bytes,
                                                              current.signatures):
            if role == "targets":
                self._bump_targets(keys, days=None, timestamp_days=timestamp_days)
            else:
                self.timestamp(keys, days=timestamp_days)
        return new.version

