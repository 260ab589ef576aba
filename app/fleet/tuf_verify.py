"""The fleet's TUF metadata as a robot checks it offline at boot, with python-tuf's metadata API
only (docs/fleet-trust.md#the-model), and what ``pull`` and the operator's commands share."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Signed, Snapshot, TargetFile, Targets, Timestamp

from app.cache.fsread import open_regular, read_small
from app.cache.hashing import oci_digest, sha256_bytes
from app.cache.names import TUF_FOLDER
from app.errors import BundleError, ConfigError, EngineInitError, RegistryError
from app.fleet import reach_hint
from app.fleet.layout import INDEX_TYPE, Descriptor, ParsedManifest

#: The field of root and targets metadata that names the repository they are valid for.
BINDING = "x-engine-init-repository"
#: The largest metadata file read (python-tuf's own bound for targets metadata).
METADATA_MAX = 5_000_000
#: The roles whose newest version a robot stores beside its root history.
STORED = ("timestamp", "snapshot", "targets")
MAX_ROOTS = 256
_ROLE_NAME = re.compile(r"sku-[0-9a-f]{16}")
ROOT_HINT = "set fleet.trusted_root_file to the fleet's 1.root.json (provisioned with the robot)"
_TS_ROLLBACK = re.compile(r"New timestamp version (\d+) must be >= (\d+)")


def role_of(sku: str) -> str:
    """The name of ``sku``'s delegated role (a SKU key may be 128 characters: too long for
    the tag of ``<version>.<role>.json``)."""
    return "sku-" + sha256_bytes(sku)[:16]


def binding_of(signed: Signed) -> str | None:
    value = signed.unrecognized_fields.get(BINDING)
    return value if isinstance(value, str) else None


def check_bound(repository: str, root: Root, *targets: Targets) -> None:
    """BundleError unless root and each targets name ``repository``."""
    for signed in (root, *targets):
        bound = binding_of(signed)
        if bound != repository:
            what = "root" if signed is root else "targets"
            raise BundleError(f"the fleet's {what} metadata is for repository {bound}, not {repository}",
                              hint="metadata from another repository (staging?) is never used here: pull "
                              "from the repository it was signed for, or sign a release for this one")


def read_trusted_root(path: Path) -> bytes:
    """The provisioned root's bytes, once root metadata signed by its own threshold (else a
    ConfigError: it is configuration, not something pulled)."""
    try:
        raw = read_small(path, METADATA_MAX, follow_links=True)  # config files are often links
    except OSError as exc:
        raise ConfigError(f"fleet.trusted_root_file {path} cannot be read: {exc.strerror or exc}",
                          hint=ROOT_HINT) from None
    try:
        md = _load(raw, Root, "it")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except (exceptions.RepositoryError, ValueError) as exc:
        raise ConfigError(f"fleet.trusted_root_file {path} is not the fleet's root metadata: {exc}",
                          hint=ROOT_HINT) from None
    return raw


def stored(folder: Path, roles: tuple[str, ...] = ()) -> dict[str, bytes]:
    """The trusted copies in ``folder`` (relative name: bytes), its folders opened without
    following links; what is absent or not a small regular file is left out."""
    out: dict[str, bytes] = {}
    fds: list[int] = []
    try:
        fds.append(open_regular(folder, folder=True))
        for name in (f"{r}.json" for r in (*STORED, *roles)):
            with contextlib.suppress(OSError):
                out[name] = read_small(name, METADATA_MAX, dir_fd=fds[0])
        fds.append(open_regular("root_history", dir_fd=fds[0], folder=True))
        for version in range(2, MAX_ROOTS):
            name = f"{version}.root.json"
            out[f"root_history/{name}"] = read_small(name, METADATA_MAX, dir_fd=fds[1])
    except OSError:
        pass  # the chain stops at the first version missing
    finally:
        for fd in fds:
            os.close(fd)
    return out


def explain(exc: BaseException, repository: str, where: Path, *,
            insecure: bool = False) -> EngineInitError:
    """One line for a refusal of python-tuf's, naming the versions of a rollback."""
    cause = exc.__cause__ if isinstance(exc, exceptions.DownloadError) else None
    if isinstance(cause, EngineInitError):  # the registry's own error, from the fetcher
        return cause
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        return BundleError(f"{repository} serves fleet metadata larger than allowed ({exc})",
                           hint="the registry's copy was altered: push the fleet's metadata again "
                           "with `engine-init fleet trust push`")
    if isinstance(exc, exceptions.DownloadError):
        hint = reach_hint(repository.partition("/")[0], insecure)
        if isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code == 404:
            hint = ("check fleet.repository / --repository for a typo; the operator uploads the "
                    "metadata with `engine-init fleet trust init` or `push`")
        return RegistryError(f"the fleet metadata in {repository} cannot be read: {exc}", hint=hint)
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


def _load(raw: bytes | None, kind: type[Signed], name: str, by: Root | Targets | None = None,
          now: datetime | None = None) -> Metadata[Any]:
    """``name``'s metadata, of ``kind``, signed for its role by its delegator ``by`` and unexpired
    at ``now`` (each when given)."""
    if raw is None:
        raise exceptions.RepositoryError(f"{name} is missing")
    md: Metadata[Any] = Metadata.from_bytes(raw)
    if not isinstance(md.signed, kind):
        raise exceptions.RepositoryError(f"{name} holds {md.signed.type} metadata")
    if by is not None:
        by.verify_delegate(name.removesuffix(".json"), md.signed_bytes, md.signatures)
    if now is not None and md.signed.is_expired(now):
        raise exceptions.ExpiredMetadataError(f"{name} is expired")
    return md


def releasing(top: Targets, sku: str, load: Callable[[str], Targets]) -> Targets:
    """The targets that release ``sku``: the top-level ones, or the SKU's delegated role
    (``load``: its verified metadata by name), in python-tuf's order (the top level first)."""
    index = f"{sku}/index.json"
    if index in top.targets or top.delegations is None:
        return top
    for name, _ in top.delegations.get_roles_for_target(index):
        if not _ROLE_NAME.fullmatch(name):
            raise exceptions.RepositoryError(f"the targets delegate {sku} to a role named {name!r}")
        return load(name)
    return top


def verified_targets(candidates: Path, trusted_root_file: Path, repository: str | None,
                     sku: str) -> Targets:
    """The targets that release ``sku`` in the metadata stored in ``candidates``, verified offline
    from the provisioned root and bound to ``repository`` when given; BundleError otherwise."""
    folder = candidates / TUF_FOLDER
    files = stored(folder)
    if not all(f"{r}.json" in files for r in STORED):
        raise BundleError(f"no verified fleet metadata in {folder}", hint="run `engine-init pull` "
                          "(a bundle stored by an older pull or by import carries none)")
    now = datetime.now(timezone.utc)
    try:
        root = _load(read_trusted_root(trusted_root_file), Root, "the provisioned root")
        for version in range(root.signed.version + 1, MAX_ROOTS):
            raw = files.get(f"root_history/{version}.root.json")
            if raw is None:
                break
            new = _load(raw, Root, f"root v{version}")
            root.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            new.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            if new.signed.version != version:
                raise exceptions.RepositoryError(f"root v{version} says v{new.signed.version}")
            root = new
        if root.signed.is_expired(now):
            raise exceptions.ExpiredMetadataError("root.json is expired")
        timestamp, snapshot, top = (
            _load(files[f"{role}.json"], kind, f"{role}.json", root.signed, now).signed
            for role, kind in (("timestamp", Timestamp), ("snapshot", Snapshot), ("targets", Targets)))
        # Stored by one refresh, they pin each other; anything else was put together by hand.
        pinned = snapshot.meta.get("targets.json")
        if snapshot.version != timestamp.snapshot_meta.version or pinned is None or (
                top.version != pinned.version):
            raise exceptions.RepositoryError(
                f"timestamp v{timestamp.version} names snapshot v{timestamp.snapshot_meta.version}, "
                f"snapshot v{snapshot.version} names targets v{pinned.version if pinned else None}, "
                f"targets is v{top.version}")

        def load(name: str) -> Targets:
            md = _load(stored(folder, (name,)).get(f"{name}.json"), Targets, f"{name}.json", top, now)
            meta = snapshot.meta.get(f"{name}.json")
            if meta is None or meta.version != md.signed.version:
                raise exceptions.RepositoryError(f"{name} is v{md.signed.version}, the snapshot "
                                                 f"names v{meta.version if meta else None}")
            role: Targets = md.signed
            return role

        targets = releasing(top, sku, load)
    except (exceptions.RepositoryError, ValueError) as exc:
        raise explain(exc, str(folder), folder) from None
    if repository is not None:
        check_bound(repository, root.signed, top, targets)
    return targets


def release_of(targets: Targets, sku: str) -> tuple[Descriptor, dict[str, Descriptor]] | None:
    """The released signed index of ``sku`` and its files, or None when it released nothing."""

    def described(target: TargetFile, media_type: str = "") -> Descriptor:
        return Descriptor(media_type, "sha256:" + str(target.hashes.get("sha256", "")), target.length)

    index = targets.targets.get(f"{sku}/index.json")
    if index is None:
        return None
    prefix = f"{sku}/files/"
    return described(index, INDEX_TYPE), {p.removeprefix(prefix): described(t)
                                          for p, t in targets.targets.items() if p.startswith(prefix)}


def check_index(raw: bytes, index: Descriptor, where: str) -> None:
    """BundleError unless ``raw`` is the signed index the release names."""
    if not index.matches(raw):
        raise BundleError(f"{where}: the bundle's index is {oci_digest(raw)}, the fleet released "
                          f"{index.digest} for it", hint="an older pull or an import stored "
                          "another bundle: run `engine-init pull` (the operator releases a bundle "
                          "with `engine-init fleet trust release`)")


def check_files(manifest: ParsedManifest, files: dict[str, Descriptor]) -> None:
    """BundleError unless the manifest lists exactly the released files, lengths and sha256."""
    hint = ("the registry's copy differs from the release: push the bundle again, and release "
            "it with `engine-init fleet trust release`")
    listed = dict(manifest.files)
    for name in sorted(listed.keys() | files.keys()):
        described, target = listed.get(name), files.get(name)
        if described is None or target is None:
            why = "not released" if target is None else "released but not in the bundle"
            raise BundleError(f"{name} is {why}", hint=hint)
        if (described.size, described.digest) != (target.size, target.digest):
            raise BundleError(f"{name}: the bundle lists {described.digest} ({described.size} bytes), "
                              f"the release {target.digest} ({target.size} bytes)", hint=hint)
