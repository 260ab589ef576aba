"""Push and pull bundles through an OCI registry with ``oras``: each request made once, every read
bounded (docs/fleet.md#bounded-retrieval); credentials from the Docker config files only."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import fleet
from app.cache.fsread import parse_json
from app.config_sections import FleetConfig
from app.errors import BundleError, RegistryError
from app.fleet import layout
from app.fleet.fetch import Source, read_document

if TYPE_CHECKING:
    from app.fleet.bundle import Documents, Files

_CHUNKED_FROM = 8 << 20
CONNECT_S = 10.0  # how long a connection may take to be accepted, whatever the read timeout
_PUSH_READ_S = 120.0  # a push's uploads: the registry checks each digest before it answers


def _what_happened(exc: BaseException, timeout_s: float) -> str:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return f"did not accept a connection within {min(CONNECT_S, timeout_s):g} s"
    if isinstance(exc, requests.Timeout):
        return f"did not answer within {timeout_s:g} s"
    text = str(exc)
    if isinstance(exc, requests.ConnectionError) and ("Connection refused" in text
                                                      or "ECONNREFUSED" in text):
        return "refused the connection (nothing listens there)"
    return "cannot be reached"


class ArtifactAbsentError(Exception):
    """No artifact under this SKU's tag: not an error for ``pull``."""


def connect(repository: str, *, insecure: bool, read_timeout_s: float = _PUSH_READ_S) -> Any:
    """An oras client and the container of ``repository`` (``host[:port]/path``)."""
    fleet.require(("oras.container", "oras.provider", "requests"),
                  "the fleet registry commands need the oras package")
    import oras.container
    import oras.provider
    import requests

    host = fleet.check_repository(repository)
    insecure = insecure or fleet.is_loopback(host)
    timeout = (min(CONNECT_S, read_timeout_s), read_timeout_s)

    def do_request(*args: Any, **kwargs: Any) -> Any:
        try:  # the undecorated request: once, no sleeping retries
            return oras.provider.Registry.do_request.__wrapped__(client, *args, **kwargs)
        except (requests.RequestException, ValueError, AttributeError) as exc:
            # oras fails inside its login (ValueError, or AttributeError from its basic
            # backend) when no credentials are given: say that instead.
            try:
                asks = client.session.request("GET", f"{client.prefix}://{host}/v2/",
                                              verify=client._tls_verify).status_code == 401
            except requests.RequestException:
                asks = False
            if asks:
                raise RegistryError(f"registry {host} asks for credentials that the Docker "
                                    "config file does not give", hint="run `docker login "
                                    f"{host}` (or set DOCKER_CONFIG) as the job's user") from None
            raise RegistryError(
                f"registry {host} {_what_happened(exc, read_timeout_s)}: "
                f"{type(exc).__name__}", hint=fleet.reach_hint(host, insecure)) from None

    # oras's token backend cannot log in to a registry that asks for Basic auth (htpasswd, as
    # CNCF Distribution's own), and its basic backend cannot get a token: ask the registry first.
    try:
        challenge = requests.get(f"{'http' if insecure else 'https'}://{host}/v2/",
                                 timeout=timeout).headers.get("Www-Authenticate", "")
    except requests.RequestException:
        challenge = ""  # the first real request reports it
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    client = oras.provider.Registry(hostname=host, insecure=insecure, auth_backend=backend)
    client.do_request = do_request  # on the instance: oras's own calls go through it too
    client.session.request = functools.partial(client.session.request, timeout=timeout)
    container = oras.container.Container(repository, registry=client.hostname)
    folder = os.environ.get("DOCKER_CONFIG")  # oras always reads ~/.docker/config.json too
    client.auth.load_configs(container, configs=[str(Path(folder) / "config.json")] if folder else None)
    return client, container


def checked(response: Any, what: str) -> Any:
    if response.status_code in (200, 201, 202):
        return response
    if response.status_code in (401, 403):
        raise RegistryError(f"the registry refused {what}: HTTP {response.status_code}",
                            hint="log in with `docker login` (credentials in the Docker config file)")
    raise RegistryError(f"the registry failed {what}: HTTP {response.status_code} {response.text[:200]!r}",
                        hint="check --repository and the registry's logs")


def _codes(response: Any) -> list[str] | None:
    """The codes of an OCI error body, read bounded; None for another body (a proxy's page)."""
    try:
        doc = parse_json(response.raw.read(64 << 10, decode_content=True) or b"{}")
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if not isinstance(errors, list) or not errors:
            return None
        return [str(e.get("code")) for e in errors if isinstance(e, dict)]
    except Exception:  # any other body: not the registry's error document
        return None


class RegistrySource(Source):
    """A bundle in a registry, tagged with its SKU key, or (``index``) the released signed index,
    fetched by digest. Blobs stream over up to ``streams`` connections (the pool keeps 10)."""

    streams = 4

    def __init__(self, repository: str, *, insecure: bool, limits: FleetConfig | None = None,
                 index: layout.Descriptor | None = None) -> None:
        self.where = repository
        self.limits = limits or FleetConfig()  # fleet.blob_grace_s, fleet.min_rate_kib_s
        self.index = index
        self.client, self.container = connect(repository, insecure=insecure,
                                              read_timeout_s=self.limits.blob_grace_s)

    def _bounded(self, response: Any, size: int, what: str) -> Iterator[bytes]:
        """The body as it arrives, at most one read past ``size``, within the limits."""
        import requests
        import urllib3

        grace_s, rate = self.limits.blob_grace_s, self.limits.min_rate_kib_s
        allowed = grace_s + size / (rate * 1024)
        start, got = time.monotonic(), 0
        while True:
            try:
                chunk = response.raw.read1(1 << 20, decode_content=True)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise RegistryError(
                    f"registry {self.where} is too slow: it sent nothing for "
                    f"{grace_s:g} s (fleet.blob_grace_s) after {got} of {size} bytes "
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
            if got > size:
                return  # the caller refuses more bytes than described
            elapsed = time.monotonic() - start
            if elapsed > allowed:
                raise RegistryError(
                    f"registry {self.where} is too slow: {got} of {size} bytes of {what} in "
                    f"{elapsed:.0f} s (allowed {allowed:.0f} s: fleet.blob_grace_s "
                    f"{grace_s:g} + the size at fleet.min_rate_kib_s {rate:g})", hint="check the "
                    "network; on a slow link lower fleet.min_rate_kib_s or raise fleet.blob_grace_s. "
                    "Nothing was stored")

    def _plain_404(self, what: str) -> RegistryError:
        """A 404 without an OCI error document: not about this repository, so nothing is absent."""
        return RegistryError(f"registry {self.container.registry} answered {what} in {self.where} "
                             "with HTTP 404 and no OCI error document (a plain 'page not found')",
                             hint="check --repository / fleet.repository, and that host[:port] "
                             "is the registry itself, not a web server or proxy in front of it")

    def document(self, reference: str, media_type: str, what: str, hint: str = "push it again",
                 absent: tuple[int, ...] = (404,), size: int = layout.DOC_MAX,
                 ) -> tuple[bytes, list[str] | None, int]:
        """The manifest or index ``reference`` (a tag or a digest) of up to ``size`` bytes, read
        within the limits, or the error codes of an answer in ``absent`` (no bytes then); and
        the answer's HTTP status."""
        url = f"{self.client.prefix}://{self.container.manifest_url(reference)}"
        response = self.client.do_request(url, "GET", headers={"Accept": media_type}, stream=True)
        try:
            if response.status_code in absent:
                codes = _codes(response)
                if codes is None and response.status_code == 404:
                    raise self._plain_404(what)
                return b"", codes or [], response.status_code
            checked(response, what)
            if response.headers.get("Content-Type", "").split(";")[0].strip() != media_type:
                raise BundleError(f"{self.where}: {what} is not an engine-init document "
                                  f"({response.headers.get('Content-Type')})", hint=hint)
            raw = b"".join(self._bounded(response, size, what))
        finally:
            response.close()
        if len(raw) > size:
            raise BundleError(f"{self.where}: {what} is too large", hint=hint)
        return raw, None, response.status_code

    def signed_index(self, sku: str) -> bytes:
        if self.index is not None:
            raw, _, _ = self.document(self.index.digest, layout.INDEX_TYPE, f"the released index "
                                   f"{self.index.digest} of {sku}", absent=(), size=self.index.size)
            return read_document(iter([raw]), self.index, "released index")
        raw, codes, _ = self.document(sku, layout.INDEX_TYPE, f"the tag {sku}",
                                   hint="push it with engine-init push")
        if codes is None:
            return raw
        # Registries answer a tag of an unknown repository as an unknown manifest (CNCF
        # Distribution does): ask for the repository's tags to tell them apart.
        if "NAME_UNKNOWN" not in codes:
            url = (f"{self.client.prefix}://{self.container.registry}/v2/"
                   f"{self.container.api_prefix}/tags/list")
            response = self.client.do_request(url, "GET", stream=True)
            try:
                codes = _codes(response) if response.status_code == 404 else []
            finally:
                response.close()
            if codes is None:
                raise self._plain_404("the tag list")
        if "NAME_UNKNOWN" in codes:
            raise RegistryError(
                f"registry {self.container.registry} has no repository "
                f"{self.container.api_prefix} (NAME_UNKNOWN)", hint="check "
                "fleet.repository / --repository for a typo; a fleet that has pushed "
                "nothing yet has no repository either: push from a reference robot")
        raise ArtifactAbsentError(f"{self.where}:{sku}")

    def manifest(self, descriptor: layout.Descriptor) -> bytes:
        raw, _, _ = self.document(descriptor.digest, layout.MANIFEST_TYPE, "the manifest", absent=(),
                               size=descriptor.size)
        return read_document(iter([raw]), descriptor, "manifest")

    @contextmanager
    def blob(self, descriptor: layout.Descriptor) -> Iterator[Iterator[bytes]]:
        response = checked(self.client.get_blob(self.container, descriptor.digest, stream=True),
                           f"blob {descriptor.digest}")
        try:
            yield self._bounded(response, descriptor.size, f"blob {descriptor.digest}")
        finally:
            response.close()


def put_blob(client: Any, container: Any, raw: bytes, what: str) -> None:
    """Upload a small blob from memory (oras uploads from files only)."""
    started = checked(client.do_request(f"{client.prefix}://{container.upload_blob_url()}", "POST"),
                      f"an upload of {what}")
    location = started.headers.get("Location", "")
    if location.startswith("/"):
        location = f"{client.prefix}://{container.registry}{location}"
    url = f"{location}{'&' if '?' in location else '?'}digest={layout.descriptor_of(raw, '').digest}"
    checked(client.do_request(url, "PUT", data=raw, headers={"Content-Type": "application/octet-stream"}),
            f"the upload of {what}")


def put_manifest(client: Any, container: Any, reference: str, raw: bytes, media_type: str,
                 what: str) -> None:
    url = f"{client.prefix}://{container.manifest_url(reference)}"
    checked(client.do_request(url, "PUT", data=raw, headers={"Content-Type": media_type}), what)


def push(repository: str, files: Files, docs: Documents, *, insecure: bool) -> str:
    """Upload the bundle (a file changed since it was hashed fails the registry's digest check);
    its ``repository:tag@digest``."""
    client, container = connect(repository, insecure=insecure)
    put_blob(client, container, docs.identity, "the identity")
    for name, path, described in files:
        layer = {"digest": described.digest, "size": described.size, "mediaType": described.media_type}
        response = client.upload_blob(str(path), container, layer,
                                      do_chunked=described.size >= _CHUNKED_FROM)
        checked(response, f"the upload of {name}")
    # The manifest by digest first: the tag must never point at an index whose manifest is missing.
    manifest = layout.descriptor_of(docs.manifest, layout.MANIFEST_TYPE)
    put_manifest(client, container, manifest.digest, docs.manifest, manifest.media_type, "the manifest")
    put_manifest(client, container, docs.sku, docs.signed_index, layout.INDEX_TYPE, f"the tag {docs.sku}")
    return f"{repository}:{docs.sku}@{layout.descriptor_of(docs.signed_index, layout.INDEX_TYPE).digest}"
