"""A bundle as the fleet released it: what ``pull`` fetches, and what ``run`` checks again.

The fleet's targets metadata (:mod:`app.fleet.tuf_repo`) names, per SKU, the signed index
(``<sku>/index.json``: its length and sha256, which is its OCI digest) and every file of the
bundle (``<sku>/files/<name>``). ``pull`` fetches the index by that digest, never by the SKU's
tag, so re-tagging an older bundle changes nothing; the manifest it names must list exactly the
released files with the released lengths and digests, and each file is then stored only if its
bytes are those (:func:`app.fleet.fetch.fetch_bundle`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from app.cache.hashing import oci_digest
from app.cancel import call_cancellable
from app.errors import BundleError, ConfigError
from app.fleet import layout
from app.fleet.fetch import FetchResult, fetch_bundle
from app.fleet.registry import ArtifactAbsentError, Limits, RegistrySource, _checked, _codes
from app.host.identity import HardwareIdentity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from tuf.api.metadata import TargetFile

    from app.fleet.tuf_client import Trusted


_HINT = "the registry's copy differs from the release: push the bundle again, and release it " \
        "with `engine-init fleet trust release`"


def _sha256(target: TargetFile) -> str:
    return "sha256:" + str(target.hashes.get("sha256", ""))


def check_index(raw: bytes, target: TargetFile, where: str) -> None:
    """BundleError unless ``raw`` is the signed index the release names."""
    got = oci_digest(raw)
    if len(raw) != target.length or got != _sha256(target):
        raise BundleError(f"{where}: the bundle's index is {got}, the fleet released "
                          f"{_sha256(target)} for it", hint="an older pull or an import stored "
                          "another bundle: run `engine-init pull` (the operator releases a bundle "
                          "with `engine-init fleet trust release`)")


def check_files(manifest: layout.ParsedManifest, files: dict[str, TargetFile]) -> None:
    """BundleError unless the manifest lists exactly the released files, each with the
    released length and sha256."""
    listed = dict(manifest.files)
    for name in sorted(listed.keys() | files.keys()):
        described, target = listed.get(name), files.get(name)
        if described is None or target is None:
            why = "not released" if target is None else "released but not in the bundle"
            raise BundleError(f"{name} is {why}", hint=_HINT)
        if (described.size, described.digest) != (target.length, _sha256(target)):
            raise BundleError(f"{name}: the bundle lists {described.digest} ({described.size} bytes), "
                              f"the release {_sha256(target)} ({target.length} bytes)", hint=_HINT)


class _Released(RegistrySource):
    """The registry, asked for the released index by its digest instead of the SKU's tag."""

    def __init__(self, repository: str, index: TargetFile, *, insecure: bool,
                 limits: Limits | None = None) -> None:
        super().__init__(repository, insecure=insecure, limits=limits)
        self._index = index

    def signed_index(self, sku: str) -> bytes:
        described = layout.Descriptor(layout.INDEX_TYPE, _sha256(self._index), self._index.length)
        response = _checked(self._get_manifest(described.digest, layout.INDEX_TYPE),
                            f"the released index {described.digest} of {sku}")
        from app.fleet.fetch import read_document

        raw = read_document(response.iter_content(64 << 10), described, "released index")
        check_index(raw, self._index, self.where)
        return raw


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def released_digest(given: str, repository: str, sku: str) -> str:
    """The ``sha256:<hex>`` digest of ``--digest``, given as that or as the whole reference
    ``push`` printed (``repository:SKU@sha256:<hex>``, which must name this repository and
    SKU); ConfigError (78) for anything else."""
    reference, _, digest = given.rpartition("@")
    if not _DIGEST.fullmatch(digest):
        raise ConfigError(f"--digest {given!r} is not a digest", hint="give sha256:<64 lowercase "
                          "hex digits>, or the whole repository:SKU@sha256:<64 hex> `push` printed")
    if reference and reference != f"{repository}:{sku}":
        raise ConfigError(f"--digest {given!r} names {reference}, not {repository}:{sku} being "
                          "released", hint="release the bundle from the repository and for the "
                          "SKU it was pushed to, or give only its sha256:<64 hex> digest")
    return digest


def released_bundle(repository: str, sku: str, digest: str | None, *, insecure: bool
                    ) -> tuple[layout.Descriptor, list[tuple[str, layout.Descriptor]]]:
    """The signed index (``digest``, else what the SKU's tag names now) and the files of the
    bundle pushed for ``sku``: what ``fleet trust release`` signs."""
    from app.fleet.bundle import Documents
    from app.fleet.fetch import read_document

    digest = None if digest is None else released_digest(digest, repository, sku)
    source = RegistrySource(repository, insecure=insecure)
    if digest is None:
        try:
            raw = source.signed_index(sku)
        except ArtifactAbsentError:
            raise BundleError(f"{repository} holds no bundle for {sku}", hint="push it first "
                              "(`engine-init push` on its reference host), or check the SKU: "
                              "`engine-init status` prints it") from None
    else:
        response = source._get_manifest(digest, layout.INDEX_TYPE)
        if response.status_code == 404 and _codes(response) is not None:
            response.close()
            raise BundleError(f"{repository} holds no bundle {digest} (no such signed index)",
                              hint=f"give --digest as `engine-init push` printed it for {sku} "
                              "to this repository, or leave it out to release what the tag "
                              "names now")
        _checked(response, f"the index {digest}")
        raw = b""
        for chunk in response.iter_content(64 << 10):
            raw += chunk
            if len(raw) > layout.DOC_MAX:
                break
        # The bytes must hash to the digest asked for (a registry answering with others is refused).
        raw = read_document(iter([raw]), layout.Descriptor(layout.INDEX_TYPE, digest, len(raw)), "index")
    index = Documents.descriptor(raw, layout.INDEX_TYPE)
    signed = layout.parse_signed_index(raw)
    manifest = layout.parse_manifest(source.manifest(signed.manifest))
    if manifest.sku != sku or signed.sku != sku:
        raise BundleError(f"{repository}@{index.digest} is a bundle for {manifest.sku}, not {sku}",
                          hint="name the SKU the bundle was pushed for")
    return index, manifest.files


def pull_release(repository: str, host: HardwareIdentity, candidates: Path, trusted_root: Path, *,
                 insecure: bool, public: Ed25519PublicKey | None, lock_timeout_s: float,
                 limits: Limits | None = None) -> tuple[Trusted, FetchResult | None]:
    """Refresh the fleet's metadata, then fetch and store the bundle it released for this
    host's SKU (None when it released none). ``public``: also check the bundle's Ed25519
    signature (when the config still names a public key)."""
    from app.fleet.keys import require_tuf

    require_tuf()
    from app.fleet.tuf_client import refresh
    from app.fleet.tuf_verify import release_of

    # In a worker thread the main thread waits on, as the blobs are fetched: a signal ends the
    # pull at once, whatever the registry is doing (the next holder of the lock sweeps).
    trusted = call_cancellable(lambda: refresh(repository, trusted_root, candidates,
                                               host.sku_key(), insecure=insecure,
                                               lock_timeout_s=lock_timeout_s, limits=limits))
    released = release_of(trusted.targets, host.sku_key())
    if released is None:
        return trusted, None
    index, files = released
    source = _Released(repository, index, insecure=insecure, limits=limits)
    return trusted, fetch_bundle(source, public, host, candidates, lock_timeout_s=lock_timeout_s,
                                 release=lambda manifest: check_files(manifest, files))
