"""The fleet's TUF metadata in the OCI registry, next to the bundles, through ``oras``.

Every metadata file is a small OCI artifact whose only layer is the file's bytes, tagged
``tuf-<file name>``: ``tuf-1.root.json``, ``tuf-2.root.json``..., ``tuf-3.snapshot.json``,
``tuf-3.targets.json`` (consistent snapshots: every version keeps its own tag) and
``tuf-timestamp.json`` (the one tag that moves on each signing). SKU keys, the tags of the
bundles, never start with ``tuf-``.

:class:`OciFetcher` is the transport of python-tuf's client (``ngclient.Updater``): it maps the
URL of a metadata file to its tag and streams the layer. It checks nothing but sizes and the
layer's digest: the trust decisions are the Updater's (signatures, versions, expiry).
"""

from __future__ import annotations

from collections.abc import Iterator

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from app.cache.hashing import oci_digest
from app.errors import BundleError
from app.fleet import layout
from app.fleet.fetch import read_document
from app.fleet.registry import (
    Limits,
    RegistrySource,
    _checked,
    _codes,
    _not_a_registry_answer,
    _put_document_blob,
    connect,
)
from app.fleet.tuf_verify import METADATA_MAX

ARTIFACT_TYPE = "application/vnd.engine-init.tuf-metadata.v1"
LAYER_TYPE = "application/vnd.tuf.metadata.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
_EMPTY = b"{}"
_PREFIX = "tuf-"


def tag_of(filename: str) -> str:
    """The tag of metadata file ``filename`` (``5.targets.json`` -> ``tuf-5.targets.json``)."""
    return _PREFIX + filename


def _manifest(raw: bytes, filename: str) -> bytes:
    empty = layout.Descriptor(EMPTY_TYPE, oci_digest(_EMPTY), len(_EMPTY))
    layer = layout.Descriptor(LAYER_TYPE, oci_digest(raw), len(raw),
                              {layout.TITLE: filename})
    return layout.canonical({"schemaVersion": 2, "mediaType": layout.MANIFEST_TYPE,
                             "artifactType": ARTIFACT_TYPE, "config": empty.doc(),
                             "layers": [layer.doc()]})


def push_metadata(repository: str, files: list[tuple[str, bytes]], *, insecure: bool) -> None:
    """Upload ``(file name, bytes)`` pairs in order (the caller puts ``timestamp.json`` last:
    until it moves, robots see the previous release whole)."""
    client, container = connect(repository, insecure=insecure)
    _put_document_blob(client, container, _EMPTY, "an empty config")
    for filename, raw in files:
        _put_document_blob(client, container, raw, filename)
        url = f"{client.prefix}://{container.manifest_url(tag_of(filename))}"
        _checked(client.do_request(url, "PUT", data=_manifest(raw, filename),
                                   headers={"Content-Type": layout.MANIFEST_TYPE}),
                 f"the tag {tag_of(filename)}")


class OciFetcher(FetcherInterface):
    """python-tuf's transport over one registry repository: ``<anything>/<file name>`` is the
    artifact tagged ``tuf-<file name>``. A tag the registry does not know is HTTP 404 to the
    Updater (for the next root version, that means "no newer root"). Its requests are the
    bundle's (:class:`~app.fleet.registry.RegistrySource`): each document and blob is read
    within ``limits`` (fleet.blob_grace_s, fleet.min_rate_kib_s), so a registry that stalls
    or trickles ends the pull (69) instead of holding the metadata's lock."""

    def __init__(self, repository: str, *, insecure: bool, limits: Limits | None = None) -> None:
        self.repository = repository
        self.source = RegistrySource(repository, insecure=insecure, limits=limits)

    def _fetch(self, url: str) -> Iterator[bytes]:
        tag = tag_of(url.rsplit("/", 1)[-1])
        source = self.source
        response = source._get_manifest(tag, layout.MANIFEST_TYPE)
        try:
            if response.status_code == 404 and _codes(response) is None:
                raise _not_a_registry_answer(source.container.registry, self.repository,
                                             f"the tag {tag}")
            if response.status_code in (404, 403):
                raise exceptions.DownloadHTTPError(f"{self.repository} has no {tag}",
                                                   response.status_code)
            _checked(response, f"the tag {tag}")
            raw = b"".join(source._bounded(response, layout.DOC_MAX, layout.DOC_MAX, f"the tag {tag}"))
        finally:
            response.close()
        if len(raw) > layout.DOC_MAX:
            raise BundleError(f"{self.repository}:{tag} is too large",
                              hint="push the fleet's metadata again")
        layers = layout._json(raw, f"manifest of {tag}").get("layers")
        if not isinstance(layers, list) or len(layers) != 1:
            raise BundleError(f"{self.repository}:{tag} is not TUF metadata",
                              hint="push the fleet's metadata again with the fleet trust commands")
        described = layout._descriptor(layers[0], f"layer of {tag}", METADATA_MAX)
        with source.blob(described) as chunks:
            data = read_document(chunks, described, tag)
        return iter([data])
