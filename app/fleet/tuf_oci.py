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
from typing import Any

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from app.cache.hashing import oci_digest
from app.errors import BundleError
from app.fleet import layout
from app.fleet.fetch import read_document
from app.fleet.registry import _checked, _codes, _not_a_registry_answer, _put_document_blob, connect
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
    Updater (for the next root version, that means "no newer root")."""

    def __init__(self, repository: str, *, insecure: bool) -> None:
        self.repository = repository
        self.client, self.container = connect(repository, insecure=insecure)

    def _get(self, reference: str, accept: str) -> Any:
        url = f"{self.client.prefix}://{self.container.manifest_url(reference)}"
        return self.client.do_request(url, "GET", headers={"Accept": accept}, stream=True)

    def _fetch(self, url: str) -> Iterator[bytes]:
        filename = url.rsplit("/", 1)[-1]
        response = self._get(tag_of(filename), layout.MANIFEST_TYPE)
        if response.status_code == 404 and _codes(response) is None:
            raise _not_a_registry_answer(self.container.registry, self.repository,
                                         f"the tag {tag_of(filename)}")
        if response.status_code in (404, 403):
            raise exceptions.DownloadHTTPError(f"{self.repository} has no {tag_of(filename)}",
                                               response.status_code)
        _checked(response, f"the tag {tag_of(filename)}")
        raw = b""
        for chunk in response.iter_content(64 << 10):
            raw += chunk
            if len(raw) > layout.DOC_MAX:
                raise BundleError(f"{self.repository}:{tag_of(filename)} is too large",
                                  hint="push the fleet's metadata again")
        layers = layout._json(raw, f"manifest of {tag_of(filename)}").get("layers")
        if not isinstance(layers, list) or len(layers) != 1:
            raise BundleError(f"{self.repository}:{tag_of(filename)} is not TUF metadata",
                              hint="push the fleet's metadata again with the fleet trust commands")
        described = layout._descriptor(layers[0], f"layer of {tag_of(filename)}", METADATA_MAX)
        blob = _checked(self.client.get_blob(self.container, described.digest, stream=True),
                        f"blob {described.digest}")
        try:
            data = read_document(blob.iter_content(64 << 10), described, tag_of(filename))
        finally:
            blob.close()
        return iter([data])
