"""Write a bundle: this host's cache files as a signed OCI image layout (a folder or a ``.tar``,
written beside its destination under a temporary name and renamed into place, never over an
existing one), or the same documents and files pushed to a registry::

    <bundle>/                       (or the same entries in <bundle>.tar)
    ├── oci-layout                  {"imageLayoutVersion": "1.0.0"}
    ├── index.json                  names the signed index by the SKU key
    └── blobs/sha256/<hex>          signed index, manifest, identity, one blob per file
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, BinaryIO, cast

from app.cache.fsread import open_binary, parse_json
from app.cache.hashing import copy_hashed, sha256_bytes
from app.cancel import checkpoint
from app.errors import BundleError, CacheWriteError
from app.fleet import layout, registry
from app.fleet.keys import key_id, sign_digest
from app.host.identity import HardwareIdentity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


_CHUNKED_FROM = 8 << 20
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


#: The files of a bundle: cache-relative name, where the file is, its descriptor.
Files = list[tuple[str, Path, layout.Descriptor]]


@dataclass(frozen=True)
class Documents:
    """The bundle's JSON documents, as the exact bytes that are hashed and signed."""

    identity: bytes
    manifest: bytes
    signed_index: bytes
    sku: str


def _hash_file(path: Path, out: int | None = None) -> tuple[str, int]:
    """The descriptor digest and size of ``path`` (copied to ``out`` when given)."""
    digest, size = copy_hashed(path, out)
    return "sha256:" + digest, size


def describe(files: dict[str, Path]) -> Files:
    """Hash every file (cache-relative name -> path); BundleError for a name or file that
    cannot be in a bundle."""
    out = []
    for name in sorted(files):
        kind = layout.kind_of(name)
        try:
            digest, size = _hash_file(files[name])
        except OSError as exc:
            raise BundleError(f"cannot read {files[name]} for the bundle: {exc.strerror or exc}",
                              hint="run `engine-init run` so that every engine is in place") from None
        out.append((name, files[name], layout.Descriptor(layout.MEDIA_TYPES[kind], digest, size)))
    return out


def documents(files: Files, identity: HardwareIdentity, key: Ed25519PrivateKey) -> Documents:
    """Identity, manifest and signed index for ``files``; the signature covers the manifest."""
    sku = identity.sku_key()
    identity_raw = layout.canonical({"sku_key": sku, "identity": identity.as_dict()})
    config = layout.descriptor_of(identity_raw, layout.IDENTITY_TYPE)
    manifest = layout.manifest_doc(config, [(name, d) for name, _, d in files], sku)
    described = layout.descriptor_of(manifest, layout.MANIFEST_TYPE)
    signature = sign_digest(key, described.digest)
    signed = layout.signed_index(described, signature, key_id(key.public_key()), sku)
    return Documents(identity_raw, manifest, signed, sku)


def _write_layout(folder: Path, files: Files, docs: Documents) -> None:
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for raw in (docs.identity, docs.manifest, docs.signed_index):
        (blobs / sha256_bytes(raw)).write_bytes(raw)
    for _, path, described in files:
        target = blobs / described.hex
        if target.exists():  # two files with the same bytes share one blob
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            digest, size = _hash_file(path, out=fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        if (digest, size) != (described.digest, described.size):
            raise BundleError(f"{path} changed while it was being exported",
                              hint="export again once no run is writing the cache")
    signed = layout.descriptor_of(docs.signed_index, layout.INDEX_TYPE)
    (folder / "index.json").write_bytes(layout.layout_index(signed, docs.sku))
    (folder / "oci-layout").write_bytes(OCI_LAYOUT)


def _tar(folder: Path, target: Path) -> None:
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("oci-layout", "index.json", "blobs", "blobs/sha256"):
            tar.add(folder / name, arcname=name, recursive=False)
        for blob in sorted((folder / "blobs" / "sha256").iterdir()):
            info = tar.gettarinfo(blob, arcname=f"blobs/sha256/{blob.name}")
            with open_binary(blob) as handle:

                def read(size: int, handle: BinaryIO = handle) -> bytes:
                    checkpoint()  # tarfile copies a blob in one call: each read looks for a signal
                    return handle.read(size)

                tar.addfile(info, cast("BinaryIO", SimpleNamespace(read=read)))


def write_bundle(dest: Path, files: Files, docs: Documents) -> Path:
    """Write the bundle at ``dest`` (a ``.tar`` when its name ends so, else a folder)."""
    if os.path.lexists(dest):
        raise CacheWriteError(f"{dest} already exists", hint="export to a new path; a bundle is "
                              "never written over an existing file or folder")
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    staging = tmp.with_name(tmp.name + ".d") if dest.suffix == ".tar" else tmp
    try:
        _write_layout(staging, files, docs)
        if dest.suffix == ".tar":
            _tar(staging, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if dest.suffix == ".tar":
            os.link(tmp, dest)  # unlike rename, fails when dest appeared meanwhile
        else:
            os.rename(tmp, dest)  # fails when a non-empty dest appeared meanwhile
    except OSError as exc:
        raise CacheWriteError(f"cannot write the bundle {dest}: {exc.strerror or exc}",
                              hint="choose a writable folder with enough free space") from None
    finally:
        for path in (staging, tmp):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                path.unlink()
    return dest


def summary(docs: Documents) -> dict[str, object]:
    """What an event or a command prints about a bundle."""
    manifest = parse_json(docs.manifest)
    return {"sku": docs.sku, "files": len(manifest["layers"]),
            "bytes": sum(layer["size"] for layer in manifest["layers"]),
            "manifest_digest": layout.descriptor_of(docs.manifest, layout.MANIFEST_TYPE).digest}


def push(repository: str, files: Files, docs: Documents, *, insecure: bool) -> str:
    """Upload the bundle; returns ``repository:tag@digest`` of the signed index. The registry
    checks each blob's digest on upload, so a file that changed since it was hashed fails."""
    client, container = registry.connect(repository, insecure=insecure)
    registry.put_blob(client, container, docs.identity, "the identity")
    for name, path, described in files:
        layer = {"digest": described.digest, "size": described.size, "mediaType": described.media_type}
        response = client.upload_blob(str(path), container, layer,
                                      do_chunked=described.size >= _CHUNKED_FROM)
        registry.checked(response, f"the upload of {name}")
    # The manifest by digest first: the tag must never point at an index whose manifest is missing.
    manifest = layout.descriptor_of(docs.manifest, layout.MANIFEST_TYPE)
    registry.put_manifest(client, container, manifest.digest, docs.manifest, manifest.media_type,
                          "the manifest")
    registry.put_manifest(client, container, docs.sku, docs.signed_index, layout.INDEX_TYPE,
                          f"the tag {docs.sku}")
    return f"{repository}:{docs.sku}@{layout.descriptor_of(docs.signed_index, layout.INDEX_TYPE).digest}"
