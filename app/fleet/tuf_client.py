"""The robot's side of the fleet's TUF metadata in the registry (docs/fleet-trust.md#the-model):
:func:`refresh` runs python-tuf's Updater in a fresh folder that replaces ``candidates/tuf`` once
verified; a released bundle is fetched by the index digest the release names, never by its tag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from app.cache.fsread import read_small
from app.cache.names import TUF_FOLDER
from app.cache.publish import atomic_write_bytes
from app.cancel import call_cancellable
from app.errors import BundleError, ConfigError
from app.fleet import layout
from app.fleet.candidates import staging
from app.fleet.fetch import FetchResult, fetch_bundle, read_document
from app.fleet.registry import ArtifactAbsentError, RegistrySource, connect, put_blob, put_manifest
from app.fleet.tuf_verify import (
    MAX_ROOTS,
    METADATA_MAX,
    ROOT_HINT,
    check_bound,
    check_files,
    explain,
    read_trusted_root,
    release_of,
    releasing,
    stored,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from app.config_sections import FleetConfig
    from app.host.identity import HardwareIdentity

_ARTIFACT_TYPE = "application/vnd.engine-init.tuf-metadata.v1"
_LAYER_TYPE = "application/vnd.tuf.metadata.v1+json"
_EMPTY = layout.Descriptor("application/vnd.oci.empty.v1+json", layout.descriptor_of(b"{}", "").digest, 2)


def refresh(repository: str, trusted_root: Path, candidates: Path, sku: str, *, insecure: bool,
            lock_timeout_s: float = 600.0, limits: FleetConfig | None = None) -> dict[str, Any]:
    """Refresh this robot's trusted metadata from ``repository``: the verified ``targets`` that
    release ``sku`` and the versions an operator checks (``root_version``, ``timestamp_version``,
    ``expires``: ISO 8601 UTC)."""
    bootstrap = read_trusted_root(trusted_root)
    current = candidates / TUF_FOLDER
    # One refresh at a time, in a fresh folder that replaces the trusted one once verified.
    with staging(candidates, TUF_FOLDER, None, timeout_s=lock_timeout_s, replace_any=True) as work:
        assert work is not None  # (no manifest to keep)
        for name, raw in stored(current).items():
            (work / name).parent.mkdir(exist_ok=True)
            atomic_write_bytes(work / name, raw)
        fetcher = OciFetcher(repository, insecure=insecure, limits=limits)

        # The Updater verified these files, written by it into this process's own folder.
        def verified(name: str) -> Any:
            return Metadata.from_bytes(read_small(work / f"{name}.json", METADATA_MAX)).signed

        try:
            updater = Updater(str(work), f"oci://{repository}/", fetcher=fetcher,
                              config=UpdaterConfig(max_root_rotations=MAX_ROOTS), bootstrap=bootstrap)
            updater.refresh()
            updater.get_targetinfo(f"{sku}/index.json")  # loads the SKU's delegated role, if any
            roots = sorted(int(p.name.split(".")[0]) for p in (work / "root_history").iterdir())
            root: Root = verified(f"root_history/{roots[-1]}.root")
            top: Targets = verified("targets")
            targets = releasing(top, sku, verified)
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise explain(exc, repository, current, insecure=insecure) from None
        except ValueError as exc:  # the provisioned root is not TUF root metadata
            raise ConfigError(f"fleet.trusted_root_file {trusted_root}: {exc}", hint=ROOT_HINT) from None
        timestamp: Timestamp = verified("timestamp")
        check_bound(repository, root, top, targets)
        return {"targets": targets, "root_version": root.version, "timestamp_version": timestamp.version,
                "expires": timestamp.expires.isoformat()}


def push_metadata(repository: str, files: list[tuple[str, bytes]], *, insecure: bool) -> None:
    """Upload ``(file name, bytes)`` in order (``timestamp.json`` last: until it moves, robots see
    the previous release whole); each a manifest tagged ``tuf-<name>`` (SKU keys never start so)."""
    client, container = connect(repository, insecure=insecure)
    put_blob(client, container, b"{}", "an empty config")
    for filename, raw in files:
        put_blob(client, container, raw, filename)
        layer = layout.descriptor_of(raw, _LAYER_TYPE)
        manifest = layout.manifest_doc(_EMPTY, [(filename, layer)], None, _ARTIFACT_TYPE)
        put_manifest(client, container, f"tuf-{filename}", manifest, layout.MANIFEST_TYPE,
                     f"the tag tuf-{filename}")


class OciFetcher(FetcherInterface):
    """python-tuf's transport: ``<anything>/<file name>`` is the artifact tagged ``tuf-<file
    name>``; a tag the registry does not know is HTTP 404 to the Updater ("no newer root")."""

    def __init__(self, repository: str, *, insecure: bool, limits: FleetConfig | None = None) -> None:
        self.source = RegistrySource(repository, insecure=insecure, limits=limits)

    def _fetch(self, url: str) -> Iterator[bytes]:
        tag = "tuf-" + url.rsplit("/", 1)[-1]
        hint = "push the fleet's metadata again with the fleet trust commands"
        raw, codes, status = self.source.document(tag, layout.MANIFEST_TYPE, f"the tag {tag}",
                                                  hint, absent=(404, 403))
        if codes is not None:  # python-tuf reads both as "no such version"
            raise exceptions.DownloadHTTPError(f"{self.source.where} has no {tag}", status)
        layers = layout.parse_object(raw, f"manifest of {tag}").get("layers")
        if not isinstance(layers, list) or len(layers) != 1:
            raise BundleError(f"{self.source.where}:{tag} is not TUF metadata", hint=hint)
        described = layout.parse_descriptor(layers[0], f"layer of {tag}", METADATA_MAX)
        with self.source.blob(described) as chunks:
            return iter([read_document(chunks, described, tag)])


def released_bundle(repository: str, sku: str, digest: str | None, *, insecure: bool
                    ) -> tuple[layout.Descriptor, list[tuple[str, layout.Descriptor]]]:
    """The signed index (``digest``, else what the SKU's tag names now) and the files of the
    bundle pushed for ``sku``: what ``fleet trust release`` signs."""
    source = RegistrySource(repository, insecure=insecure)
    if digest is None:
        try:
            raw = source.signed_index(sku)
        except ArtifactAbsentError:
            raise BundleError(f"{repository} holds no bundle for {sku}", hint="push it first "
                              "(`engine-init push` on its reference host), or check the SKU: "
                              "`engine-init status` prints it") from None
    else:
        digest = released_digest(digest, repository, sku)
        raw, codes, _ = source.document(digest, layout.INDEX_TYPE, f"the index {digest}")
        if codes is not None:
            raise BundleError(f"{repository} holds no bundle {digest} (no such signed index)",
                              hint=f"give --digest as `engine-init push` printed it for {sku} "
                              "to this repository, or leave it out to release what the tag "
                              "names now")
        # A registry answering with other bytes than the digest asked for is refused.
        raw = read_document(iter([raw]), layout.Descriptor(layout.INDEX_TYPE, digest, len(raw)), "index")
    index = layout.descriptor_of(raw, layout.INDEX_TYPE)
    signed = layout.parse_signed_index(raw)
    manifest = layout.parse_manifest(source.manifest(signed.manifest))
    if manifest.sku != sku or signed.sku != sku:
        raise BundleError(f"{repository}@{index.digest} is a bundle for {manifest.sku}, not {sku}",
                          hint="name the SKU the bundle was pushed for")
    return index, manifest.files


def released_digest(given: str, repository: str, sku: str) -> str:
    """The ``sha256:<hex>`` of ``--digest``, given so or as the ``repository:SKU@sha256:<hex>``
    ``push`` printed (of this repository and SKU); ConfigError (78) otherwise."""
    reference, _, digest = given.rpartition("@")
    if not layout.DIGEST.fullmatch(digest):
        raise ConfigError(f"--digest {given!r} is not a digest", hint="give sha256:<64 lowercase "
                          "hex digits>, or the whole repository:SKU@sha256:<64 hex> `push` printed")
    if reference and reference != f"{repository}:{sku}":
        raise ConfigError(f"--digest {given!r} names {reference}, not {repository}:{sku} being "
                          "released", hint="release the bundle from the repository and for the "
                          "SKU it was pushed to, or give only its sha256:<64 hex> digest")
    return digest


def pull_release(repository: str, host: HardwareIdentity, candidates: Path, trusted_root: Path, *,
                 insecure: bool, public: Ed25519PublicKey | None, lock_timeout_s: float,
                 limits: FleetConfig | None = None) -> tuple[dict[str, Any], FetchResult | None]:
    """Refresh the fleet's metadata, then fetch and store the bundle it released for this
    host's SKU (None when none) by its index digest; ``public``: check its signature too."""
    # In a worker thread: a signal ends the pull at once (the next holder of the lock sweeps).
    trusted = call_cancellable(lambda: refresh(repository, trusted_root, candidates,
                                               host.sku_key(), insecure=insecure,
                                               lock_timeout_s=lock_timeout_s, limits=limits))
    released = release_of(trusted["targets"], host.sku_key())
    if released is None:
        return trusted, None
    index, files = released
    source = RegistrySource(repository, insecure=insecure, limits=limits, index=index)
    return trusted, fetch_bundle(source, public, host, candidates, lock_timeout_s=lock_timeout_s,
                                 release=lambda manifest: check_files(manifest, files))
