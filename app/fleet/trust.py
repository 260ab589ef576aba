"""Whether a SKU's candidate folder is still the bundle the fleet signed, checked by ``run``.

``import`` and ``pull`` verified the bundle when they stored it; ``run`` checks it again before
it takes anything from the folder, since the folder may have been edited since, or filled by a
plain copy. ``index.json`` (the signed index as received) must carry an Ed25519 signature that
verifies with ``fleet.public_key_file`` over the digest of ``manifest.json``, and the manifest
must be of this SKU. Each file then taken from ``files/`` is read once and must have the size
and digest the manifest lists (:func:`signed_bytes`). Anything else, no public key configured
included, refuses the whole folder: a candidate is never trusted by default.

With ``fleet.trusted_root_file`` set, the fleet's TUF metadata decides instead
(docs/fleet-trust.md): the metadata in ``candidates/tuf`` must verify from that root, offline,
unexpired and bound to ``fleet.repository``, and release exactly this ``index.json`` and these
files for this SKU (:mod:`app.fleet.release`); the Ed25519 signature is checked too while
``fleet.public_key_file`` is set. A folder without a release (stored by an older ``pull`` or by
``import``) is refused, naming the fix.

The check runs once per folder and process (``run`` is one process): its answer is kept under
the stat facts of the key file, ``index.json`` and ``manifest.json`` (ctime included, which no
one can set back), so that a folder replaced or edited during the run is checked again. This
module loads ``cryptography`` only when it checks a signature.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cache.fsread import read_small
from app.cache.hashing import oci_digest
from app.errors import EngineInitError
from app.fleet import layout


@dataclass(frozen=True)
class Trust:
    """The files the verified manifest lists (cache-relative name: descriptor); ``reason``
    says why the folder is refused, and is empty when it is trusted."""

    files: dict[str, layout.Descriptor] = field(default_factory=dict)
    reason: str = ""


_CHECKED: dict[tuple[object, ...], Trust] = {}


def _stamp(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def trust_folder(folder: Path, sku: str, public_key_file: Path | None,
                 trusted_root: Path | None = None, repository: str | None = None) -> Trust:
    """The verdict on the candidate folder ``folder`` of ``sku`` (see the module docstring)."""
    if public_key_file is None and trusted_root is None:
        return Trust(reason="fleet.public_key_file is not set (nor fleet.trusted_root_file), so "
                            "its signature cannot be checked")
    anchors = [p for p in (public_key_file, trusted_root) if p is not None]
    metadata: list[Path] = []
    if trusted_root is not None:
        from app.fleet.keys import require_tuf

        try:
            require_tuf()
        except EngineInitError as exc:
            return Trust(reason=f"{exc} ({exc.hint})")
        from app.cache.names import TUF_FOLDER

        metadata = [folder.parent / TUF_FOLDER / f"{r}.json" for r in ("timestamp", "snapshot", "targets")]
    try:
        key = (str(folder), sku, repository, *(_stamp(p) for p in (
            *anchors, folder / "index.json", folder / "manifest.json")),
            *(_stamp(p) if os.path.lexists(p) else () for p in metadata))
    except OSError as exc:
        return Trust(reason=f"{exc.filename}: {exc.strerror or exc}")
    if key not in _CHECKED:
        _CHECKED[key] = _check(folder, sku, public_key_file, trusted_root, repository)
    return _CHECKED[key]


def _check(folder: Path, sku: str, public_key_file: Path | None, trusted_root: Path | None,
           repository: str | None) -> Trust:
    from app.fleet.keys import key_id, load_public_key, verify_digest

    files: dict[str, Any] = {}
    try:
        raw_index = read_small(folder / "index.json", layout.DOC_MAX)
        if trusted_root is not None:
            files = _released(folder, sku, raw_index, trusted_root, repository)
        signed = layout.parse_signed_index(raw_index)
        if public_key_file is not None:
            public = load_public_key(public_key_file)
            if not verify_digest(public, signed.manifest.digest, signed.signature):
                return Trust(reason=f"its signature does not verify with public key {key_id(public)} "
                                    f"(its index names key {signed.key_id})")
        raw = read_small(folder / "manifest.json", layout.DOC_MAX)
        if len(raw) != signed.manifest.size or oci_digest(raw) != signed.manifest.digest:
            return Trust(reason="manifest.json is not the manifest its signature covers")
        manifest = layout.parse_manifest(raw)
        if trusted_root is not None:
            from app.fleet.release import check_files

            check_files(manifest, files)
    except EngineInitError as exc:  # a bad key file, an unsigned or malformed document
        # Under TUF the fix matters (pull again, or a release to make): the hint goes along.
        return Trust(reason=str(exc) + (f" ({exc.hint})" if trusted_root and exc.hint else ""))
    except (OSError, ValueError) as exc:
        return Trust(reason=f"unreadable: {exc}")
    if manifest.sku != sku or signed.sku != sku:
        return Trust(reason=f"its manifest is for SKU {manifest.sku}, not {sku}")
    return Trust(dict(manifest.files))


def _released(folder: Path, sku: str, raw_index: bytes, trusted_root: Path,
              repository: str | None) -> dict[str, Any]:
    """The files the fleet's verified metadata releases for ``sku``, once ``raw_index`` is
    the released index; EngineInitError naming why not."""
    from app.errors import BundleError
    from app.fleet.release import check_index
    from app.fleet.tuf_verify import release_of, verified_targets

    released = release_of(verified_targets(folder.parent, trusted_root, repository, sku), sku)
    if released is None:
        raise BundleError(f"the fleet's metadata releases nothing for {sku}",
                          hint="the operator releases it with `engine-init fleet trust release`")
    check_index(raw_index, released[0], str(folder))
    return released[1]


def signed_bytes(folder: Path, name: str, trust: Trust) -> bytes:
    """``files/<name>`` of ``folder``, read once; ValueError unless the manifest ``trust`` holds
    lists exactly these bytes (OSError when it cannot be read, or is not a regular file)."""
    described = trust.files.get(name)
    if described is None:
        raise ValueError(f"the signed manifest does not list {name}")
    payload = read_small(folder / "files" / name, described.size)
    if len(payload) != described.size or oci_digest(payload) != described.digest:
        raise ValueError(f"{name} is not the file the signed manifest lists")
    return payload
