"""Optional HMAC-SHA256 signatures over provenance records and the readiness marker.

sha256 sidecars catch corruption, not someone who rewrites an engine and its sidecar together.
With a signing key (a file, e.g. a Docker secret) every record and the marker carry
``"signature": hmac_sha256(key, canonical JSON without the signature)``; since a record holds
its engine's digest, a forged engine needs the key to pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small
from app.errors import ConfigError

__all__ = ["SIGNATURE_FIELD", "is_signed_by", "load_key", "sign", "signed"]

SIGNATURE_FIELD = "signature"
_MIN_KEY_BYTES = 16
#: Far more than any key: a larger file is not one.
_MAX_KEY_BYTES = 64 << 10


def load_key(path: Path) -> bytes:
    """Read a signing key file; at least 16 bytes (surrounding whitespace ignored).

    Through the safe reader: a FIFO there would block the open (and the job's signal
    handling with it), a device such as ``/dev/zero`` never ends; both are refused, as is
    a file larger than a key can be. Links are followed (secrets are mounted through them)."""
    try:
        key = read_small(path, _MAX_KEY_BYTES, follow_links=True).strip()
    except OSError as exc:
        raise ConfigError(
            f"signing_key_file: cannot read {path}: {exc.strerror or exc}",
            hint="mount the key (e.g. as a Docker secret) as a regular file readable by the "
                 "job's user",
        ) from None
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigError(
            f"signing_key_file: {path} holds {len(key)} bytes; at least {_MIN_KEY_BYTES} needed",
            hint="generate one with: head -c 32 /dev/urandom | base64 > key",
        )
    return key


def _canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(key: bytes, doc: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(doc), hashlib.sha256).hexdigest()


def signed(key: bytes | None, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its signature added when a key is configured, unchanged otherwise."""
    if key is None:
        return doc
    return {**doc, SIGNATURE_FIELD: sign(key, doc)}


def is_signed_by(key: bytes, doc: dict[str, Any]) -> bool:
    given = doc.get(SIGNATURE_FIELD)
    return isinstance(given, str) and hmac.compare_digest(given, sign(key, doc))
