"""Read a bundle, verifying while reading, and store its files as candidates. The order makes it
safe: the signature over the manifest digest before anything else is read, then the manifest, the
identity (this SKU), and only then the files, each streamed once while size and digest are checked."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from app.cache.fsread import UnsafeFileError, open_regular, parse_json, read_small
from app.cache.hashing import oci_digest
from app.cancel import map_cancellable
from app.errors import BundleError
from app.fleet import layout
from app.fleet.bundle import refusal
from app.fleet.candidates import staging, store_document, store_file
from app.host.identity import HardwareIdentity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


_CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchResult:
    sku: str
    manifest_digest: str
    folder: Path
    files: int
    bytes: int
    already: bool  # the same bundle was stored before: nothing was read or written


def read_document(chunks: Iterator[bytes], descriptor: layout.Descriptor, what: str) -> bytes:
    """Collect a small blob, refusing more than its descriptor's size or other bytes."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > descriptor.size:
            break
    if not descriptor.matches(data):
        raise BundleError(f"the bundle's {what} does not match its digest {descriptor.digest}",
                          hint=layout.ALTERED)
    return bytes(data)


def _damaged(where: str, why: str) -> BundleError:
    return BundleError(f"{where}: {why}", hint="the bundle is damaged or not an engine-init bundle; "
                       "copy or export it again")


class Source:
    """A bundle's bytes: ``index.json`` and blobs (a layout folder or a tar; a registry
    overrides how the signed index and the manifest are read)."""

    where: str
    streams = 1  # how many blobs may be read at once

    def index_json(self) -> bytes:
        raise NotImplementedError

    def blob(self, descriptor: layout.Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        raise NotImplementedError

    def signed_index(self, sku: str) -> bytes:
        described = layout.parse_layout_index(self.index_json(), sku)
        with self.blob(described) as chunks:
            return read_document(chunks, described, "signed index")

    def manifest(self, descriptor: layout.Descriptor) -> bytes:
        with self.blob(descriptor) as chunks:
            return read_document(chunks, descriptor, "manifest")


class LayoutSource(Source):
    """An OCI image layout folder. Its folders are opened one by one without following links,
    and blobs must be regular files: a link or FIFO planted in it is refused, never followed."""

    streams = 4  # each blob its own file descriptor

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            self._root = open_regular(path, follow_links=True, folder=True)
            blobs = open_regular("blobs", dir_fd=self._root, folder=True)
            try:
                self._blobs = open_regular("sha256", dir_fd=blobs, folder=True)
            finally:
                os.close(blobs)
        except OSError as exc:
            raise _damaged(self.where, f"not an OCI image layout ({exc.strerror or exc})") from None

    def close(self) -> None:
        os.close(self._blobs)
        os.close(self._root)

    def index_json(self) -> bytes:
        try:
            return read_small("index.json", layout.DOC_MAX, dir_fd=self._root)
        except OSError as exc:
            raise _damaged(self.where, f"index.json unreadable ({exc})") from None

    @contextmanager
    def blob(self, descriptor: layout.Descriptor) -> Iterator[Iterator[bytes]]:
        try:
            fd = open_regular(descriptor.hex, dir_fd=self._blobs)
        except UnsafeFileError:
            raise _damaged(self.where, f"blob {descriptor.digest} is a link, FIFO or folder") from None
        except OSError as exc:
            raise _damaged(self.where, f"blob {descriptor.digest} missing ({exc.strerror})") from None
        try:
            yield iter(lambda: os.read(fd, _CHUNK), b"")
        finally:
            os.close(fd)


class TarSource(Source):
    """A ``.tar`` of an OCI image layout, read in place. Only ``oci-layout``, ``index.json`` and
    ``blobs/sha256/<hex>`` are looked at; one of them that is not a regular file, or is there
    twice, makes the whole tar refused."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            fd = open_regular(path, follow_links=True)
            self._file = os.fdopen(fd, "rb")
            self._tar = tarfile.open(fileobj=self._file, mode="r:")  # noqa: SIM115 (closed in close())
            members = []
            for member in self._tar:  # not getmembers(): a tar of a million entries stops early
                members.append(member)
                if len(members) > layout.MAX_FILES + 16:
                    raise tarfile.TarError(f"more than {layout.MAX_FILES} entries")
        except (OSError, tarfile.TarError) as exc:
            raise _damaged(self.where, f"not a readable tar ({exc})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in members:
            name = member.name.removeprefix("./")
            if name in ("oci-layout", "index.json") or name.startswith("blobs/sha256/"):
                if not member.isreg() or name in self._members:
                    why = "there twice" if name in self._members else "not a regular file"
                    raise _damaged(self.where, f"{name} is {why}")
                self._members[name] = member

    def close(self) -> None:
        self._tar.close()
        self._file.close()

    def _open(self, name: str, size: int | None) -> IO[bytes]:
        member = self._members.get(name)
        handle = self._tar.extractfile(member) if member is not None else None
        if member is None or handle is None:
            raise _damaged(self.where, f"{name} is missing")
        if size is not None and member.size != size:
            raise _damaged(self.where, f"{name} holds {member.size} bytes, not the signed {size}")
        return handle

    def index_json(self) -> bytes:
        raw = self._open("index.json", None).read(layout.DOC_MAX + 1)
        if len(raw) > layout.DOC_MAX:
            raise _damaged(self.where, "index.json is too large")
        return raw

    @contextmanager
    def blob(self, descriptor: layout.Descriptor) -> Iterator[Iterator[bytes]]:
        handle = self._open(f"blobs/sha256/{descriptor.hex}", descriptor.size)

        def chunks() -> Iterator[bytes]:
            try:
                yield from iter(lambda: handle.read(_CHUNK), b"")
            except (OSError, tarfile.TarError) as exc:  # a truncated tar ends early here
                raise _damaged(self.where, f"blob {descriptor.digest} is cut short ({exc})") from None

        yield chunks()


@contextmanager
def open_bundle(path: Path) -> Iterator[LayoutSource | TarSource]:
    """The bundle at ``path``: a folder, or a tar file."""
    source: LayoutSource | TarSource = TarSource(path) if not path.is_dir() else LayoutSource(path)
    try:
        yield source
    finally:
        source.close()


def fetch_bundle(source: Source, public: Ed25519PublicKey | None, host: HardwareIdentity,
                 candidates: Path, *, lock_timeout_s: float = 600.0,
                 release: Callable[[layout.ParsedManifest], None] | None = None) -> FetchResult:
    """Verify ``source`` (with ``public`` and ``release``, each when given) for this ``host``, then
    store its files under ``<candidates>/<sku>/``; BundleError (nothing stored) on any failed check."""
    sku = host.sku_key()
    raw_index = source.signed_index(sku)
    signed = layout.parse_signed_index(raw_index)
    if public is None and release is None:
        raise BundleError(f"{source.where}: nothing to verify the bundle with",
                          hint="set fleet.trusted_root_file or fleet.public_key_file")
    why = refusal(public, signed) if public is not None else ""
    if why:
        raise BundleError(f"{source.where}: {why}", hint="use the fleet's public key; a bundle "
                          "signed by another key is refused")
    raw_manifest = source.manifest(signed.manifest)
    manifest = layout.parse_manifest(raw_manifest)
    if release is not None:  # the fleet's TUF release (app.fleet.tuf_client) lists these files
        release(manifest)
    with source.blob(manifest.config) as chunks:
        raw_identity = read_document(chunks, manifest.config, "identity")
    try:
        doc = parse_json(raw_identity)
        theirs = HardwareIdentity.from_dict(doc.get("identity") if isinstance(doc, dict) else None)
    except ValueError as exc:
        raise _damaged(source.where, f"its identity is unreadable ({exc})") from None
    differs = host.diff(theirs)
    if differs or manifest.sku != sku or signed.sku != sku:
        raise BundleError(f"{source.where}: the bundle is for SKU {manifest.sku}, this host is {sku}"
                          + (f" ({'; '.join(differs)})" if differs else ""),
                          hint="an engine is only used on the SKU it was built on: pull or export "
                          "the bundle of this SKU, or let `run` build here")
    digest = oci_digest(raw_manifest)
    with staging(candidates, manifest.sku, digest, timeout_s=lock_timeout_s) as stage:
        if stage is not None:  # else the same bundle is stored: nothing is read or written
            def fetch(item: tuple[str, layout.Descriptor]) -> None:
                with source.blob(item[1]) as chunks:
                    store_file(stage, item[0], item[1], chunks)

            # Several files at once where the source allows it (sha256, the socket and the disk
            # all release the GIL), the largest first so that the engines overlap.
            map_cancellable(fetch, sorted(manifest.files, key=lambda f: -f[1].size),
                            source.streams, name="fetch")
            for name, raw in (("index.json", raw_index), ("manifest.json", raw_manifest),
                              ("identity.json", raw_identity)):
                store_document(stage / name, raw)
    return FetchResult(manifest.sku, digest, candidates / manifest.sku, len(manifest.files),
                       sum(d.size for _, d in manifest.files), stage is None)
