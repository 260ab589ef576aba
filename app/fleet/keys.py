"""Ed25519 keys for fleet bundles: the reference robot signs, every robot verifies.

A fleet must not share one HMAC secret: any robot holding it could forge engines for all; with
Ed25519 the robots hold only the public key. Keys are PEM files (PKCS#8, SubjectPublicKeyInfo)
as ``openssl genpkey -algorithm ed25519`` and ``engine-init fleet keygen`` write them; the same
files sign the fleet's TUF metadata (:func:`load_key_files`). What is signed is the manifest's
digest after a fixed context string, so that a signature made for anything else never verifies.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from app.cache.fsread import read_small
from app.cache.hashing import sha256_bytes
from app.errors import ConfigError
from app.fleet import INSTALL_HINT

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from securesystemslib.signer import CryptoSigner, SSlibKey

    from app.fleet.layout import SignedIndex


_KEY_FILE_MAX = 64 << 10
_CONTEXT = b"engine-init bundle manifest v1\n"
_HINT = "create a key pair with `engine-init fleet keygen PRIVATE PUBLIC` (or openssl genpkey " \
        "-algorithm ed25519) and name the files with --private-key / --public-key"
#: The hint when the file holds the other key of the pair (by ``private``: what was asked for).
_OTHER_KIND = {True: "this is a public key: sign with the private one",
               False: "this is a private key: robots get only the public one"}


def _require(modules: tuple[str, ...], message: str, hint: str) -> None:
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        raise ConfigError(message, hint=hint) from None


def _cryptography() -> None:
    _require(("cryptography",), "the fleet commands need the cryptography package", INSTALL_HINT)


def require_tuf() -> None:
    """ConfigError unless python-tuf and securesystemslib are installed (docs/fleet-trust.md)."""
    _require(("securesystemslib", "tuf"), "the fleet's trust metadata needs the tuf and "
             "securesystemslib packages", "pip install 'tuf>=7,<8' 'securesystemslib>=1.3,<2'")


def _read(path: Path, what: str, hint: str = _HINT) -> bytes:
    try:
        return read_small(path, _KEY_FILE_MAX, follow_links=True)  # secrets are often links (k8s)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}", hint=hint) from None


def _load(path: Path, private: bool) -> object:
    _cryptography()
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
    """The Ed25519 private key in the PEM file ``path``; ConfigError naming the file otherwise."""
    return cast("Ed25519PrivateKey", _load(path, private=True))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``; ConfigError naming the file otherwise."""
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


def refusal(public: Ed25519PublicKey, signed: SignedIndex) -> str:
    """Why the signed index's signature does not verify with ``public`` ('' when it does)."""
    if verify_digest(public, signed.manifest.digest, signed.signature):
        return ""
    return (f"the signature does not verify with public key {key_id(public)} (the index names "
            f"key {signed.key_id})")


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (the private file mode 0600); never overwrites. Returns the key id."""
    _cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
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
    """Each PEM file as a key of the fleet's TUF metadata (securesystemslib's); private ones
    also sign (ConfigError naming a bad file)."""
    require_tuf()
    from securesystemslib.signer import CryptoSigner, SSlibKey

    out = []
    for path in paths:
        head = _read(path, "key file", "name an Ed25519 PEM file written by `engine-init fleet keygen`")
        if head.count(b"-----BEGIN ") > 1:  # a reader would take the first and ignore the rest
            raise ConfigError(f"key file {path} holds {head.count(b'-----BEGIN ')} PEM blocks",
                              hint="one key per file: split it, and name each file with its own option")
        if b"PRIVATE KEY" in head:
            private = load_private_key(path)
            signer = CryptoSigner(private)
            out.append(KeyFile(path, signer.public_key, signer))
        else:
            out.append(KeyFile(path, SSlibKey.from_crypto(load_public_key(path)), None))
    return out
