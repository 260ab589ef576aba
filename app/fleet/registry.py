"""Push and pull bundles through an OCI registry, with ``oras`` (the ORAS Python SDK).

A push uploads the cache files themselves as blobs (chunked for large ones), the identity, the
manifest (by digest) and the signed index under the tag ``<sku key>``. A pull is a
:class:`RegistrySource` for :func:`app.fleet.fetch.fetch_bundle`: the tag's signed index, then
the manifest by digest, then blobs streamed through the verifier, each byte hashed once.

Registry credentials come from the Docker config files (``~/.docker/config.json``, and
``$DOCKER_CONFIG/config.json`` when set: oras always reads the former), never from
engine-init's config. Plain HTTP only when asked (``--insecure``), or for a registry on
``localhost`` or 127.0.0.0/8 (``::1``), as Docker treats them. oras retries a failing request
five times with sleeps growing to minutes; the client here makes each request once, so a
registry that is down is reported at once (a boot-time pull has better things to do than wait).

Every request is bounded (:class:`Limits`): no silence longer than ``fleet.blob_grace_s``, and
each document or blob must arrive within ``blob_grace_s + size / min_rate``; a registry that
trickles bytes is given up on (RegistryError, exit 69), never waited for with the lock held.
A repository the registry does not know (``NAME_UNKNOWN``: mistyped, or nothing ever pushed)
is an error naming it; only a known repository without this SKU's tag is "no artifact".
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cache.fsread import parse_json
from app.config_sections import FleetConfig
from app.errors import BundleError, ConfigError, RegistryError
from app.fleet import INSTALL_HINT, address, layout
from app.fleet.bundle import Documents, SourceFile
from app.fleet.fetch import read_document

_CHUNKED_FROM = 8 << 20
_PUSH_READ_S = 120.0  # a push's uploads: the registry checks each digest before it answers


@dataclass(frozen=True)
class Limits:
    """How long a pull waits: ``grace_s`` for any request and the longest silence, then
    ``min_rate`` bytes per second for each blob beyond it (``fleet.blob_grace_s``,
    ``fleet.min_rate_kib_s``)."""

    grace_s: float = FleetConfig.model_fields["blob_grace_s"].default
    min_rate: float = FleetConfig.model_fields["min_rate_kib_s"].default * 1024

    @classmethod
    def of(cls, fleet: FleetConfig) -> Limits:
        """The limits the config's fleet section sets."""
        return cls(fleet.blob_grace_s, fleet.min_rate_kib_s * 1024)

    def deadline_s(self, size: int) -> float:
        return self.grace_s + size / self.min_rate


class ArtifactAbsentError(Exception):
    """The registry holds no artifact under this SKU's tag (not an error for ``pull``)."""


def _docker_configs() -> list[str] | None:
    folder = os.environ.get("DOCKER_CONFIG")
    return [str(Path(folder) / "config.json")] if folder else None


def connect(repository: str, *, insecure: bool, read_timeout_s: float = _PUSH_READ_S) -> Any:
    """An oras client and the container of ``repository`` (``host[:port]/path``); plain HTTP
    when ``insecure`` or the registry is on loopback."""
    try:
        import oras.container
        import oras.provider
        import requests
    except ImportError:
        raise ConfigError("the fleet registry commands need the oras package",
                          hint=INSTALL_HINT) from None
    host = address.check_repository(repository)
    insecure = insecure or address.is_loopback(host)
    timeout = (min(address.CONNECT_S, read_timeout_s), read_timeout_s)

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
                raise RegistryError(
                    f"registry {host} {address.what_happened(exc, read_timeout_s)}: "
                    f"{type(exc).__name__}", hint=address.reach_hint(host, insecure)) from None

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
                                 timeout=timeout).headers.get("Www-Authenticate", "")
    except requests.RequestException:
        challenge = ""  # the first real request reports it
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    client = Client(hostname=host, insecure=insecure, auth_backend=backend)
    client.session.request = functools.partial(client.session.request, timeout=timeout)
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


def _codes(response: Any) -> list[str] | None:
    """The error codes of a registry's JSON error body (OCI distribution spec), read bounded;
    None when the body is not such a document (a web server's or a proxy's page)."""
    try:
        doc = parse_json(response.raw.read(64 << 10, decode_content=True) or b"{}")
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if not isinstance(errors, list) or not errors:
            return None
        return [str(e.get("code")) for e in errors if isinstance(e, dict)]
    except Exception:  # any other body: not the registry's error document
        return None


def _not_a_registry_answer(host: str, repository: str, what: str) -> RegistryError:
    """A 404 without an OCI error document: whatever answered did not speak of this
    repository's contents, so nothing can be said absent."""
    return RegistryError(f"registry {host} answered {what} in {repository} with HTTP 404 and no "
                         "OCI error document (a plain 'page not found')",
                         hint="check --repository / fleet.repository, and that host[:port] is "
                         "the registry itself, not a web server or proxy in front of it")


class RegistrySource:
    """A bundle in a registry, tagged with its SKU key. Blobs stream over up to ``streams``
    connections at once (the session's pool keeps 10 per host), each within ``limits``."""

    streams = 4

    def __init__(self, repository: str, *, insecure: bool, limits: Limits | None = None) -> None:
        self.where = repository
        self.limits = limits or Limits()
        self.client, self.container = connect(repository, insecure=insecure,
                                              read_timeout_s=self.limits.grace_s)

    def _get_manifest(self, reference: str, media_type: str) -> Any:
        url = f"{self.client.prefix}://{self.container.manifest_url(reference)}"
        return self.client.do_request(url, "GET", headers={"Accept": media_type}, stream=True)

    def _bounded(self, response: Any, size: int, limit: int, what: str) -> Iterator[bytes]:
        """``response``'s body as it arrives (each chunk what one read gives), at most
        ``limit`` bytes past ``size``; RegistryError when it breaks off or is too slow."""
        import requests
        import urllib3

        allowed = self.limits.deadline_s(size)
        start, got = time.monotonic(), 0
        while True:
            try:
                chunk = response.raw.read1(1 << 20, decode_content=True)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise RegistryError(
                    f"registry {self.where} is too slow: it sent nothing for "
                    f"{self.limits.grace_s:g} s (fleet.blob_grace_s) after {got} of {size} bytes "
                    f"of {what}", hint="check the network; on a slow link raise "
                    "fleet.blob_grace_s. Nothing was stored") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise RegistryError(f"the download of {what} from {self.where} broke off after "
                                    f"{got} bytes: {type(exc).__name__}", hint="check the network "
                                    "and pull again; nothing was stored") from None
            if not chunk:
                return
            got += len(chunk)
            yield chunk
            if got > limit:
                return  # the caller refuses more bytes than described
            elapsed = time.monotonic() - start
            if elapsed > allowed:
                raise RegistryError(
                    f"registry {self.where} is too slow: {got} of {size} bytes of {what} in "
                    f"{elapsed:.0f} s (allowed {allowed:.0f} s: fleet.blob_grace_s "
                    f"{self.limits.grace_s:g} + the size at fleet.min_rate_kib_s "
                    f"{self.limits.min_rate / 1024:g})", hint="check the network; on a slow link "
                    "lower fleet.min_rate_kib_s or raise fleet.blob_grace_s. Nothing was stored")

    def _repository_unknown(self) -> bool:
        url = f"{self.client.prefix}://{self.container.registry}/v2/{self.container.api_prefix}/tags/list"
        response = self.client.do_request(url, "GET", stream=True)
        try:
            if response.status_code != 404:
                return False
            codes = _codes(response)
            if codes is None:
                raise _not_a_registry_answer(self.container.registry, self.where, "the tag list")
            return "NAME_UNKNOWN" in codes
        finally:
            response.close()

    def signed_index(self, sku: str) -> bytes:
        response = self._get_manifest(sku, layout.INDEX_TYPE)
        try:
            if response.status_code == 404:
                # Registries answer a tag of an unknown repository as an unknown manifest
                # (CNCF Distribution does): ask for the repository's tags to tell them apart.
                codes = _codes(response)
                if codes is None:
                    raise _not_a_registry_answer(self.container.registry, self.where, f"the tag {sku}")
                if "NAME_UNKNOWN" in codes or self._repository_unknown():
                    raise RegistryError(
                        f"registry {self.container.registry} has no repository "
                        f"{self.container.api_prefix} (NAME_UNKNOWN)", hint="check "
                        "fleet.repository / --repository for a typo; a fleet that has pushed "
                        "nothing yet has no repository either: push from a reference robot")
                raise ArtifactAbsentError(f"{self.where}:{sku}")
            _checked(response, f"the tag {sku}")
            if response.headers.get("Content-Type", "").split(";")[0].strip() != layout.INDEX_TYPE:
                raise BundleError(f"{self.where}:{sku} is not an engine-init bundle "
                                  f"({response.headers.get('Content-Type')})",
                                  hint="push it with engine-init push")
            raw = b"".join(self._bounded(response, layout.DOC_MAX, layout.DOC_MAX, f"the tag {sku}"))
        finally:
            response.close()
        if len(raw) > layout.DOC_MAX:
            raise BundleError(f"{self.where}:{sku}: the tagged index is too large",
                              hint="push the bundle again with engine-init push")
        return raw

    def manifest(self, descriptor: layout.Descriptor) -> bytes:
        response = _checked(self._get_manifest(descriptor.digest, layout.MANIFEST_TYPE), "the manifest")
        try:
            return read_document(self._bounded(response, descriptor.size, descriptor.size,
                                               "the manifest"), descriptor, "manifest")
        finally:
            response.close()

    @contextmanager
    def blob(self, descriptor: layout.Descriptor) -> Iterator[Iterator[bytes]]:
        response = _checked(self.client.get_blob(self.container, descriptor.digest, stream=True),
                            f"blob {descriptor.digest}")
        try:
            yield self._bounded(response, descriptor.size, descriptor.size, f"blob {descriptor.digest}")
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
