"""Signed bundles (docs/fleet.md#bundles-and-the-commands): Ed25519 keys (PEM, as ``openssl genpkey
-algorithm ed25519`` writes them; they sign the TUF metadata too), and this host's cache files
written as a signed OCI image layout, a folder or a ``.tar``, never over an existing one."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, BinaryIO, cast

from app.cache.fsread import open_binary, read_small
from app.cache.hashing import copy_hashed, sha256_bytes
from app.cache.publish import temp_name
from app.cache.signing import MAX_KEY_BYTES
from app.cancel import checkpoint
from app.errors import BundleError, CacheWriteError, ConfigError
from app.fleet import layout, require
from app.host.identity import HardwareIdentity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from securesystemslib.signer import CryptoSigner, SSlibKey

# Signed after a fixed context string: a signature made for anything else never verifies.
_CONTEXT = b"engine-init bundle manifest v1\n"
_HINT = "create a key pair with `engine-init fleet keygen PRIVATE PUBLIC` (or openssl genpkey " \
        "-algorithm ed25519) and name the files with --private-key / --public-key"
#: The hint when the file holds the other key of the pair (by ``private``: what was asked for).
_OTHER_KIND = {True: "this is a public key: sign with the private one",
               False: "this is a private key: robots get only the public one"}


def require_tuf() -> None:
    """ConfigError unless python-tuf and securesystemslib are installed (docs/fleet-trust.md)."""
    require(("securesystemslib", "tuf"), "the fleet's trust metadata needs the tuf and "
             "securesystemslib packages", "pip install 'tuf>=7,<8' 'securesystemslib>=1.3,<2'")


def _read(path: Path, what: str, hint: str = _HINT) -> bytes:
    try:
        return read_small(path, MAX_KEY_BYTES, follow_links=True)  # secrets are often links (k8s)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}", hint=hint) from None


def _load(path: Path, private: bool) -> object:
    require(("cryptography",), "the fleet commands need the cryptography package")
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    what, other = ("private key", b"PUBLIC KEY") if private else ("public key", b"PRIVATE KEY")
    data = _read(path, what)
    try:
        key = load_pem_private_key(data, password=None) if private else load_pem_public_key(data)
    except TypeError:  # only a private key can need a password
        raise ConfigError(f"{what} {path} is encrypted",
                          hint="store it unencrypted, readable only by the job (a Docker secret)") from None
    except ValueError:
        hint = _OTHER_KIND[private] if other in data else _HINT
        raise ConfigError(f"{what} {path} is not a PEM {what}", hint=hint) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey):
        raise ConfigError(f"{what} {path} is a {type(key).__name__.removeprefix('_')}, not Ed25519",
                          hint=_HINT)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    return cast("Ed25519PrivateKey", _load(path, private=True))


def load_public_key(path: Path) -> Ed25519PublicKey:
    return cast("Ed25519PublicKey", _load(path, private=False))


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits naming a public key (sha256 of its raw bytes), shown in errors."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return sha256_bytes(public.public_bytes(Encoding.Raw, PublicFormat.Raw))[:16]


def sign_digest(private: Ed25519PrivateKey, digest: str) -> bytes:
    return private.sign(_CONTEXT + digest.encode("ascii"))


def verify_digest(public: Ed25519PublicKey, digest: str, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(signature, _CONTEXT + digest.encode("ascii"))
    except InvalidSignature:
        return False
    return True


def refusal(public: Ed25519PublicKey, signed: layout.SignedIndex) -> str:
    """Why the signed index's signature does not verify with ``public`` ('' when it does)."""
    if verify_digest(public, signed.manifest.digest, signed.signature):
        return ""
    return (f"the signature does not verify with public key {key_id(public)} (the index names "
            f"key {signed.key_id})")


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (the private file mode 0600); never overwrites. Returns the key id."""
    require(("cryptography",), "the fleet commands need the cryptography package")
    from cryptography.hazmat.primitives import serialization as pem_format
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(pem_format.Encoding.PEM, pem_format.PrivateFormat.PKCS8,
                                pem_format.NoEncryption())
    public_pem = private.public_key().public_bytes(pem_format.Encoding.PEM,
                                                   pem_format.PublicFormat.SubjectPublicKeyInfo)
    written: list[Path] = []
    try:
        for path, payload, mode in ((private_path, pem, 0o600), (public_path, public_pem, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                os.fsync(handle.fileno())
    except OSError as exc:
        for path in written:
            path.unlink()
        if isinstance(exc, FileExistsError):
            raise ConfigError(f"{exc.filename} already exists", hint="choose a new file name; "
                              "keys are never overwritten") from None
        raise ConfigError(f"cannot write {exc.filename}: {exc.strerror}",
                          hint="choose a writable folder") from None
    return key_id(private.public_key())


@dataclass(frozen=True)
class KeyFile:
    """A key named on the command line: its public half, and a signer when it is private."""

    path: Path
    key: SSlibKey
    signer: CryptoSigner | None


def load_key_files(paths: list[Path]) -> list[KeyFile]:
    """Each PEM file as a securesystemslib key of the fleet's TUF metadata, with a signer when
    it is private (ConfigError naming a bad file)."""
    require_tuf()
    from securesystemslib.signer import CryptoSigner, SSlibKey

    out = []
    for path in paths:
        head = _read(path, "key file", "name an Ed25519 PEM file written by `engine-init fleet keygen`")
        if head.count(b"-----BEGIN ") > 1:  # a reader would take the first and ignore the rest
            raise ConfigError(f"key file {path} holds {head.count(b'-----BEGIN ')} PEM blocks",
                              hint="one key per file: split it, and name each file with its own option")
        if b"PRIVATE KEY" in head:
            signer = CryptoSigner(load_private_key(path))
            out.append(KeyFile(path, signer.public_key, signer))
        else:
            out.append(KeyFile(path, SSlibKey.from_crypto(load_public_key(path)), None))
    return out


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


def describe(files: dict[str, Path]) -> Files:
    """Hash every file (cache-relative name: path); BundleError for one a bundle cannot carry."""
    out = []
    for name in sorted(files):
        kind = layout.kind_of(name)
        try:
            digest, size = copy_hashed(files[name])
        except OSError as exc:
            raise BundleError(f"cannot read {files[name]} for the bundle: {exc.strerror or exc}",
                              hint="run `engine-init run` so that every engine is in place") from None
        out.append((name, files[name], layout.Descriptor(layout.MEDIA_TYPES[kind], "sha256:" + digest,
                                                         size)))
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
            copied = copy_hashed(path, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        if copied != (described.hex, described.size):
            raise BundleError(f"{path} changed while it was being exported",
                              hint="export again once no run is writing the cache")
    signed = layout.descriptor_of(docs.signed_index, layout.INDEX_TYPE)
    (folder / "index.json").write_bytes(layout.layout_index(signed, docs.sku))
    (folder / "oci-layout").write_bytes(OCI_LAYOUT)


def _tar(folder: Path, target: Path) -> None:
    import tarfile

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
    tmp = temp_name(dest)
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
