"""Push and pull bundles through an OCI registry, with ``oras`` (the ORAS Python SDK).

A push uploads the cache files themselves as blobs (chunked for large ones), the identity, the
manifest (by digest) and the signed index under the tag ``<sku key>``. A pull is a
:class:`RegistrySource` for :func:`app.fleet.fetch.fetch_bundle`: the tag's signed index, then
the manifest by digest, then blobs streamed through the verifier, each byte hashed once.

Registry credentials come from the Docker config files (``~/.docker/config.json``, and
``$DOCKER_CONFIG/config.json`` when set: oras always reads the former), never from
engine-init's config. Plain HTTP only when asked
(``--insecure``). oras retries a failing request five times with sleeps growing to minutes; the
client here makes each request once, with timeouts, so a registry that is down is reported at
once (a boot-time pull has better things to do than wait).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.errors import BundleError, ConfigError, RegistryError
from app.fleet import layout
from app.fleet.bundle import Documents, SourceFile
from app.fleet.fetch import read_document

__all__ = ["ArtifactAbsentError", "RegistrySource", "connect", "push"]

_CHUNKED_FROM = 8 << 20
_TIMEOUT = (10.0, 120.0)  # connect, read (seconds)


class ArtifactAbsentError(Exception):
    """The registry holds no artifact under this SKU's tag (not an error for ``pull``)."""


def _docker_configs() -> list[str] | None:
    folder = os.environ.get("DOCKER_CONFIG")
    return [str(Path(folder) / "config.json")] if folder else None


def connect(repository: str, *, insecure: bool) -> Any:
    """An oras client and the container of ``repository`` (``host[:port]/path``)."""
    try:
        import oras.container
        import oras.provider
        import requests
    except ImportError:
        raise ConfigError("the fleet registry commands need the oras package",
                          hint="pip install 'engine-init[fleet]'") from None
    host, _, path = repository.partition("/")
    if not host or not path or "://" in repository or ":" in path or "@" in path:
        raise ConfigError(f"--repository {repository!r} is not host[:port]/path",
                          hint="e.g. registry.example.com/fleet/engines (the tag is the SKU key)")

    class Client(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, *args: Any, **kwargs: Any) -> Any:
            try:  # the undecorated request: once, no sleeping retries
                return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)
            except (requests.RequestException, ValueError, AttributeError) as exc:
                # oras fails inside its login (ValueError, or AttributeError from its basic
                # backend) when no credentials are given: say that instead.
                if self._asks_for_credentials():
                    raise RegistryError(f"registry {host} asks for credentials that the Docker "
                                        "config file does not give", hint="run `docker login "
                                        f"{host}` (or set DOCKER_CONFIG) as the job's user") from None
                # Plain HTTP already asked for (--insecure or fleet.insecure): not the fix.
                raise RegistryError(f"registry {host} cannot be reached: {type(exc).__name__}",
                                    hint="check the network and --repository" + (
                                        "" if insecure else "; plain HTTP needs --insecure")
                                    ) from None

        def _asks_for_credentials(self) -> bool:
            try:
                answer = self.session.request("GET", f"{self.prefix}://{host}/v2/", verify=self._tls_verify)
            except requests.RequestException:
                return False
            return int(answer.status_code) == 401

    # oras's token backend cannot log in to a registry that asks for Basic auth (htpasswd, as
    # CNCF Distribution's own), and its basic backend cannot get a token: ask the registry first.
    try:
        challenge = requests.get(f"{'http' if insecure else 'https'}://{host}/v2/",
                                 timeout=_TIMEOUT).headers.get("Www-Authenticate", "")
    except requests.RequestException:
        challenge = ""  # the first real request reports it
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    client = Client(hostname=host, insecure=insecure, auth_backend=backend)
    client.session.request = functools.partial(client.session.request, timeout=_TIMEOUT)
    container = oras.container.Container(repository, registry=client.hostname)
    client.auth.load_configs(container, configs=_docker_configs())
    return client, container


def _checked(response: Any, what: str) -> Any:
    if response.status_code in (200, 201, 202):
        return response
    if response.status_code in (401, 403):
        raise RegistryError(f"the registry refused {what}: HTTP {response.status_code}",
                            hint="log in with `docker login` (credentials in the Docker config file)")
    raise RegistryError(f"the registry failed {what}: HTTP {response.status_code} {response.text[:200]!r}",
                        hint="check --repository and the registry's logs")


class RegistrySource:
    """A bundle in a registry, tagged with its SKU key. Blobs stream over up to ``streams``
    connections at once (the session's pool keeps 10 per host)."""

    streams = 4

    def __init__(self, repository: str, *, insecure: bool) -> None:
        self.where = repository
        self.client, self.container = connect(repository, insecure=insecure)

    def _get_manifest(self, reference: str, media_type: str) -> Any:
        url = f"{self.client.prefix}://{self.container.manifest_url(reference)}"
        return self.client.do_request(url, "GET", headers={"Accept": media_type}, stream=True)

    def signed_index(self, sku: str) -> bytes:
        response = self._get_manifest(sku, layout.INDEX_TYPE)
        if response.status_code == 404:
            raise ArtifactAbsentError(f"{self.where}:{sku}")
        _checked(response, f"the tag {sku}")
        if response.headers.get("Content-Type", "").split(";")[0].strip() != layout.INDEX_TYPE:
            raise BundleError(f"{self.where}:{sku} is not an engine-init bundle "
                              f"({response.headers.get('Content-Type')})",
                              hint="push it with engine-init push")
        raw = b""
        for chunk in response.iter_content(64 << 10):
            raw += chunk
            if len(raw) > layout.DOC_MAX:
                raise BundleError(f"{self.where}:{sku}: the tagged index is too large",
                                  hint="push the bundle again with engine-init push")
        return raw

    def manifest(self, descriptor: layout.Descriptor) -> bytes:
        response = _checked(self._get_manifest(descriptor.digest, layout.MANIFEST_TYPE), "the manifest")
        return read_document(response.iter_content(64 << 10), descriptor, "manifest")

    @contextmanager
    def blob(self, descriptor: layout.Descriptor) -> Iterator[Iterator[bytes]]:
        import requests

        response = _checked(self.client.get_blob(self.container, descriptor.digest, stream=True),
                            f"blob {descriptor.digest}")

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_content(1 << 20)
            except requests.RequestException as exc:
                raise RegistryError(f"the download of {descriptor.digest} broke off: {type(exc).__name__}",
                                    hint="pull again; nothing was stored") from None

        try:
            yield chunks()
        finally:
            response.close()


def _put_document_blob(client: Any, container: Any, raw: bytes, what: str) -> None:
    """Upload a small blob from memory (oras uploads from files only)."""
    digest = Documents.descriptor(raw, "").digest
    started = _checked(client.do_request(f"{client.prefix}://{container.upload_blob_url()}", "POST"),
                       f"an upload of {what}")
    location = started.headers.get("Location", "")
    if location.startswith("/"):
        location = f"{client.prefix}://{container.registry}{location}"
    url = f"{location}{'&' if '?' in location else '?'}digest={digest}"
    _checked(client.do_request(url, "PUT", data=raw, headers={"Content-Type": "application/octet-stream"}),
             f"the upload of {what}")


def push(repository: str, files: list[SourceFile], docs: Documents, *, insecure: bool) -> str:
    """Upload the bundle; returns ``repository:tag@digest`` of the signed index. The registry
    checks each blob's digest on upload, so a file that changed since it was hashed fails."""
    client, container = connect(repository, insecure=insecure)
    _put_document_blob(client, container, docs.identity, "the identity")
    for f in files:
        layer = {"digest": f.descriptor.digest, "size": f.descriptor.size,
                 "mediaType": f.descriptor.media_type}
        response = client.upload_blob(str(f.path), container, layer,
                                      do_chunked=f.descriptor.size >= _CHUNKED_FROM)
        _checked(response, f"the upload of {f.name}")
    manifest = Documents.descriptor(docs.manifest, layout.MANIFEST_TYPE)
    # The manifest by digest first: the tag must never point at an index whose manifest is missing.
    for raw, reference, media, what in (
            (docs.manifest, manifest.digest, layout.MANIFEST_TYPE, "the manifest"),
            (docs.signed_index, docs.sku, layout.INDEX_TYPE, f"the tag {docs.sku}")):
        url = f"{client.prefix}://{container.manifest_url(reference)}"
        _checked(client.do_request(url, "PUT", data=raw, headers={"Content-Type": media}), what)
    signed = Documents.descriptor(docs.signed_index, layout.INDEX_TYPE)
    return f"{repository}:{docs.sku}@{signed.digest}"
