"""The OCI documents of a bundle (docs/fleet.md#bundles-and-the-commands): the layout's index.json
names the signed index by SKU key (what a tag points at); its one manifest descriptor carries the
Ed25519 signature; the manifest's config is the identity, one layer per file titled with its name."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from app.cache.fsread import parse_json
from app.cache.hashing import oci_digest
from app.cache.names import CACHE_SUBFOLDERS, RECORD_SUFFIX, SIDECAR_SUFFIX
from app.errors import BundleError

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.engine-init.bundle.v1"
IDENTITY_TYPE = "application/vnd.engine-init.identity.v1+json"
#: One media type per kind of file in the cache.
MEDIA_TYPES = {
    "engine": "application/vnd.engine-init.engine.v1",
    "sidecar": "application/vnd.engine-init.sha256.v1",
    "record": "application/vnd.engine-init.record.v1+json",
    "timing": "application/vnd.engine-init.timing-cache.v1",
    "calibration": "application/vnd.engine-init.calibration-cache.v1",
}
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
SKU = "dev.engine-init.sku"
SIGNATURE = "dev.engine-init.signature"
KEY_ID = "dev.engine-init.key-id"
#: The hint for bytes that are not the signed ones.
ALTERED = "the bundle or the registry's copy was altered; push it again"
#: JSON documents (indexes, manifest, identity) are small; anything larger is refused unread.
DOC_MAX = 1 << 20
MAX_FILES = 4096
MAX_BLOB = 64 << 30
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")

    def matches(self, data: bytes | bytearray) -> bool:
        return len(data) == self.size and oci_digest(data) == self.digest


@dataclass(frozen=True)
class SignedIndex:
    manifest: Descriptor
    signature: bytes
    key_id: str
    sku: str


@dataclass(frozen=True)
class ParsedManifest:
    config: Descriptor
    files: list[tuple[str, Descriptor]]  # (cache-relative name, layer)
    sku: str


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def descriptor_of(raw: bytes, media_type: str) -> Descriptor:
    return Descriptor(media_type, oci_digest(raw), len(raw))


def check_name(name: str) -> str:
    """A file name a bundle may carry: ``<file>``, ``timing/<file>`` or ``calibration/<file>``,
    each part of letters, digits and ``._-`` not starting with a dot. BundleError otherwise."""
    parts = name.split("/") if isinstance(name, str) else []
    ok = (len(parts) == 1 or (len(parts) == 2 and parts[0] in CACHE_SUBFOLDERS)) and all(
        _PART.fullmatch(p) for p in parts)
    if not ok:
        raise BundleError(f"the bundle names a file {name!r}, which engine-init never writes",
                          hint="the bundle was not made by engine-init export; ask for a new one")
    return name


def kind_of(name: str) -> str:
    check_name(name)
    if "/" in name:
        return name.split("/", 1)[0]
    if name.endswith(SIDECAR_SUFFIX):
        return "sidecar"
    return "record" if name.endswith(RECORD_SUFFIX) else "engine"


def manifest_doc(config: Descriptor, files: list[tuple[str, Descriptor]], sku: str | None,
                 artifact_type: str = ARTIFACT_TYPE) -> bytes:
    """A manifest of ``files`` (each layer titled with its name), annotated with ``sku`` if given."""
    return canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": artifact_type,
        "config": config.doc(),
        "layers": [Descriptor(d.media_type, d.digest, d.size, {**d.annotations, TITLE: name}).doc()
                   for name, d in files],
        **({"annotations": {SKU: sku}} if sku is not None else {}),
    })


def signed_index(manifest: Descriptor, signature: bytes, key_id: str, sku: str) -> bytes:
    annotations = {SIGNATURE: base64.b64encode(signature).decode("ascii"), KEY_ID: key_id}
    described = Descriptor(MANIFEST_TYPE, manifest.digest, manifest.size, annotations)
    return canonical({"schemaVersion": 2, "mediaType": INDEX_TYPE,
                      "manifests": [{**described.doc(), "artifactType": ARTIFACT_TYPE}],
                      "annotations": {SKU: sku}})


def layout_index(signed: Descriptor, sku: str) -> bytes:
    entry = Descriptor(INDEX_TYPE, signed.digest, signed.size, {REF_NAME: sku})
    return canonical({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [entry.doc()]})


def _bad(what: str) -> BundleError:
    return BundleError(f"the bundle's {what}", hint="the bundle is damaged or was not made by "
                       "engine-init export; export or push it again")


def parse_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = parse_json(raw)
    except ValueError:
        raise _bad(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise _bad(f"{what} is not a JSON object")
    return doc


def parse_descriptor(doc: object, what: str, max_size: int = MAX_BLOB) -> Descriptor:
    if not isinstance(doc, dict):
        raise _bad(f"{what} is not a descriptor")
    media, digest, size, notes = (doc.get(k) for k in ("mediaType", "digest", "size", "annotations"))
    notes = {} if notes is None else notes
    if not (isinstance(media, str) and isinstance(digest, str) and DIGEST.fullmatch(digest)
            and isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= max_size
            and isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())):
        raise _bad(f"{what} is malformed (media type, sha256 digest, size up to {max_size})")
    return Descriptor(media, digest, size, dict(notes))


def _sku(doc: dict[str, Any], what: str) -> str:
    notes = doc.get("annotations")
    sku = notes.get(SKU) if isinstance(notes, dict) else None
    if not isinstance(sku, str) or not sku:
        raise _bad(f"{what} names no SKU key")
    return sku


def parse_layout_index(raw: bytes, sku: str) -> Descriptor:
    """The signed index that a layout's index.json names ``sku``; BundleError if none."""
    doc = parse_object(raw, "index.json")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise _bad("index.json lists no manifests")
    found = [parse_descriptor(e, "index.json entry", DOC_MAX) for e in entries[:MAX_FILES]]
    named = [d for d in found if d.media_type == INDEX_TYPE]
    for d in named:
        if d.annotations.get(REF_NAME) == sku:
            return d
    others = sorted(d.annotations.get(REF_NAME, "?") for d in named)
    raise BundleError(f"the bundle holds no engines for this host's SKU {sku} "
                      f"(it holds: {', '.join(others) or 'nothing'})",
                      hint="export the bundle on a robot of this SKU, or build here with `run`")


def parse_signed_index(raw: bytes) -> SignedIndex:
    doc = parse_object(raw, "signed index")
    entries = doc.get("manifests")
    if doc.get("mediaType") != INDEX_TYPE or not isinstance(entries, list) or len(entries) != 1:
        raise _bad("signed index is not an OCI index of one manifest")
    manifest = parse_descriptor(entries[0], "manifest descriptor", DOC_MAX)
    if manifest.media_type != MANIFEST_TYPE:
        raise _bad(f"signed index points at a {manifest.media_type}, not a manifest")
    try:
        signature = base64.b64decode(manifest.annotations.get(SIGNATURE, ""), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise BundleError("the bundle is not signed (no Ed25519 signature on its manifest)",
                          hint="sign it: export or push with --private-key")
    return SignedIndex(manifest, signature, manifest.annotations.get(KEY_ID, "?"),
                       _sku(doc, "signed index"))


def parse_manifest(raw: bytes) -> ParsedManifest:
    doc = parse_object(raw, "manifest")
    if doc.get("mediaType") != MANIFEST_TYPE or doc.get("artifactType") != ARTIFACT_TYPE:
        raise _bad(f"manifest is not an {ARTIFACT_TYPE}")
    config = parse_descriptor(doc.get("config"), "identity descriptor", DOC_MAX)
    if config.media_type != IDENTITY_TYPE:
        raise _bad(f"config is a {config.media_type}, not {IDENTITY_TYPE}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_FILES:
        raise _bad(f"manifest lists no layers, or more than {MAX_FILES}")
    files: list[tuple[str, Descriptor]] = []
    for i, layer in enumerate(layers):
        d = parse_descriptor(layer, f"layer {i}")
        name = d.annotations.get(TITLE, "")
        if MEDIA_TYPES[kind_of(name)] != d.media_type:
            raise _bad(f"file {name} has media type {d.media_type}, not {MEDIA_TYPES[kind_of(name)]}")
        files.append((name, d))
    names = [n for n, _ in files]
    if len(set(names)) != len(names):
        raise _bad("manifest names one file twice")
    return ParsedManifest(config, files, _sku(doc, "manifest"))
