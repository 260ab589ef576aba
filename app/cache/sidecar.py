"""sha256 sidecars: ``<artifact>.sha256`` holds the 64 lowercase hex digits of the artifact.

The artifact is published first, the sidecar second; a kill between the two leaves an artifact
whose sidecar is absent or stale, which :meth:`Sha256Sidecar.verify` rejects.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.cache.fsread import read_small
from app.cache.hashing import EarlyDigests, hash_file, sha256_bytes
from app.cache.layout import SIDECAR_SUFFIX
from app.cache.names import companion
from app.cache.publish import atomic_write_bytes

_HEX64 = re.compile(rb"[0-9a-f]{64}")
# A sidecar is 64 hex digits, maybe a newline; anything much larger is not ours.
_SIDECAR_MAX = 256


def sidecar_path(path: Path) -> Path:
    return companion(path, SIDECAR_SUFFIX)


class Sha256Sidecar:
    """Write an artifact with its sidecar, and verify the pair."""

    @staticmethod
    def write_atomic_and_sidecar(path: Path, payload: bytes | bytearray | memoryview) -> str:
        """Publish ``payload`` at ``path``, then its sidecar; return the hex digest."""
        path = Path(path)
        digest = sha256_bytes(payload)
        atomic_write_bytes(path, payload)
        Sha256Sidecar.write(path, digest)
        return digest

    @staticmethod
    def write(path: Path, digest: str) -> None:
        """Publish the sidecar of ``path``, already published, whose sha256 is ``digest``."""
        atomic_write_bytes(sidecar_path(Path(path)), digest.encode("ascii"))

    @staticmethod
    def read(path: Path) -> str | None:
        """The digest recorded for ``path``, or None if the sidecar is missing, malformed, or
        not a small regular file (a FIFO or a link planted there is not waited on, not followed)."""
        try:
            text = read_small(sidecar_path(Path(path)), _SIDECAR_MAX).strip()
        except OSError:
            return None
        return text.decode("ascii") if _HEX64.fullmatch(text) else None

    @staticmethod
    def verify(path: Path) -> bool:
        """True when ``path`` is a regular file whose sha256 matches its sidecar; never raises."""
        return Sha256Sidecar.verified_digest(path) is not None

    @staticmethod
    def verified_digest(path: Path, early: EarlyDigests | None = None) -> str | None:
        """The verified digest of ``path``, or None if it does not match its sidecar.
        ``early``: digests hashed before this call (the file is still opened and checked)."""
        try:
            expected = Sha256Sidecar.read(path)
            if expected is None:
                return None
            actual = hash_file(Path(path), early)
        except (OSError, ValueError):
            return None
        return actual if actual == expected else None
