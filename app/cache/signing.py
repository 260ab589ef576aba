"""HMAC-SHA256 signatures over provenance records and the readiness marker: sidecars catch
corruption, not someone who rewrites an engine and its sidecar together. The robot's own key
and what it does not defend against: docs/fleet.md#the-trust-model."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small
from app.cache.names import ROBOT_KEY_NAME
from app.cache.publish import fsync_dir, os_error_to_cache_error, temp_name
from app.errors import CacheWriteError, ConfigError

SIGNATURE_FIELD = "signature"
_MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64 << 10  # far more than any key file: a larger file is not one
_ROBOT_KEY_BYTES = 32
_REMAKE = "remove it; the next run makes a new key (and rebuilds the engines it recorded)"


def load_key(path: Path) -> bytes:
    """A signing key file's bytes, at least 16 (docs/hardening.md#key-files)."""
    try:
        key = read_small(path, MAX_KEY_BYTES, follow_links=True).strip()
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


def canonical(doc: dict[str, Any]) -> bytes:
    """The JSON of ``doc`` whatever its key order: what is signed, and settings fingerprinted."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign(key: bytes, doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def signed(key: bytes | None, doc: dict[str, Any]) -> dict[str, Any]:
    if key is None:
        return doc
    return {**doc, SIGNATURE_FIELD: sign(key, doc)}


def is_signed_by(key: bytes, doc: dict[str, Any]) -> bool:
    given = doc.get(SIGNATURE_FIELD)
    return isinstance(given, str) and hmac.compare_digest(given, sign(key, doc))


def robot_key(cache_root: Path, *, create: bool) -> bytes | None:
    """This robot's own record key; made when absent and ``create``, else None. Published
    whole or not at all (a temp file linked into place: two runs agree on one key)."""
    path = Path(cache_root) / ROBOT_KEY_NAME
    for _ in range(2):
        try:
            key = read_small(path, 4 * _ROBOT_KEY_BYTES)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            raise CacheWriteError(f"{path}: {exc.strerror or exc}", hint=_REMAKE) from None
        if key is not None:
            if len(key) != _ROBOT_KEY_BYTES:
                raise CacheWriteError(f"{path} is not a key engine-init wrote ({len(key)} bytes)",
                                      hint=_REMAKE)
            return key
        if not create:
            return None
        tmp = temp_name(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # a first boot: no cache yet
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(_ROBOT_KEY_BYTES))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another run made one first: use it
                os.link(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            raise os_error_to_cache_error(exc, path) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    raise CacheWriteError(f"{path} keeps disappearing", hint="find what removes files in the cache")
