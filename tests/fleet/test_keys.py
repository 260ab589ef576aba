"""Ed25519 key files: real keys, and every wrong file named in a one-line error."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.errors import ConfigError
from app.fleet.keys import (
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_digest,
    verify_digest,
)

DIGEST = "sha256:" + "ab" * 32


def test_keygen_sign_verify(tmp_path):
    kid = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    private, public = load_private_key(tmp_path / "k.pem"), load_public_key(tmp_path / "k.pub.pem")
    assert key_id(public) == kid and len(kid) == 16
    signature = sign_digest(private, DIGEST)
    assert verify_digest(public, DIGEST, signature)
    assert not verify_digest(public, "sha256:" + "cd" * 32, signature)
    assert not verify_digest(public, DIGEST, bytes(64))
    # The context string: a plain signature of the digest is not a bundle signature.
    assert not verify_digest(public, DIGEST, private.sign(DIGEST.encode()))


def test_keygen_never_overwrites(tmp_path):
    (tmp_path / "taken.pub.pem").write_text("mine")
    with pytest.raises(ConfigError, match=r"taken\.pub\.pem already exists"):
        generate_keypair(tmp_path / "new.pem", tmp_path / "taken.pub.pem")
    assert (tmp_path / "taken.pub.pem").read_text() == "mine"
    assert not (tmp_path / "new.pem").exists()  # the half-made pair is removed


def _pem(key, private=True, password=None):
    if private:
        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_wrong_files_are_named(tmp_path):
    ed = ed25519.Ed25519PrivateKey.generate()
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "missing.pem": (None, "cannot be read"),
        "ec.pem": (_pem(ecdsa), "not Ed25519"),
        "locked.pem": (_pem(ed, password=b"secret"), "is encrypted"),
        "public.pem": (_pem(ed, private=False), "not a PEM private key"),
        "garbage.pem": (b"hello\n", "not a PEM private key"),
        "huge.pem": (b"A" * (1 << 20), "more than the"),
    }
    for name, (payload, message) in cases.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
        with pytest.raises(ConfigError, match=message) as info:
            load_private_key(tmp_path / name)
        assert name in str(info.value) and info.value.hint
    (tmp_path / "ec.pub.pem").write_bytes(_pem(ecdsa, private=False))
    with pytest.raises(ConfigError, match=r"ec\.pub\.pem is a .*not Ed25519"):
        load_public_key(tmp_path / "ec.pub.pem")
    (tmp_path / "private-as-public.pem").write_bytes(_pem(ed))
    with pytest.raises(ConfigError, match="not a PEM public key") as info:
        load_public_key(tmp_path / "private-as-public.pem")
    assert "robots get only the public one" in info.value.hint


def test_a_fifo_as_key_file_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "fifo.pem")
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(result, tmp_path / "fifo.pem"), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and isinstance(result[0], ConfigError)
    assert "not a regular file" in str(result[0])


def test_a_linked_key_file_is_read(tmp_path):
    """Kubernetes mounts secrets as links into a ..data folder: keys are followed."""
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    (tmp_path / "link.pub.pem").symlink_to(tmp_path / "k.pub.pem")
    linked = load_public_key(tmp_path / "link.pub.pem")
    assert key_id(linked) == key_id(load_public_key(tmp_path / "k.pub.pem"))


def _capture(out: list[BaseException], path):
    try:
        load_private_key(path)
    except BaseException as exc:
        out.append(exc)
