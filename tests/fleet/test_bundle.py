"""Bundles: export as an OCI layout (folder or tar), import with every check, real keys and files;
and the Ed25519 key files, every wrong file named in a one-line error."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.errors import BundleError, CacheWriteError, ConfigError
from app.fleet import layout
from app.fleet.bundle import (
    describe,
    documents,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_digest,
    verify_digest,
    write_bundle,
)
from app.fleet.fetch import fetch_bundle, open_bundle
from tests.fleet.helpers import AGX, NX, blob_of, cache_files, export, leftovers

SKU = AGX.sku_key()


def do_import(bundle: Path, keys, cache_root: Path, host=AGX):
    cache_root.mkdir(parents=True, exist_ok=True)  # the volume exists on a robot
    with open_bundle(bundle) as source:
        return fetch_bundle(source, keys.public, host, cache_root / "candidates")


@pytest.mark.parametrize("name", ["bundle", "bundle.tar"])
def test_round_trip_stores_identical_candidates(tmp_path, keys, name):
    files = cache_files(tmp_path / "reference")
    bundle = export(tmp_path / name, files, AGX, keys)
    robot = tmp_path / "robot-cache"
    result = do_import(bundle, keys, robot)
    assert (result.sku, result.files, result.already) == (SKU, len(files), False)
    stored = robot / "candidates" / SKU
    for rel, source in files.items():
        assert (stored / "files" / rel).read_bytes() == source.read_bytes(), rel
    assert result.bytes == sum(p.stat().st_size for p in files.values())
    identity = json.loads((stored / "identity.json").read_bytes())
    assert identity["sku_key"] == SKU and identity["identity"]["sm_count"] == 16
    manifest = (stored / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == result.manifest_digest
    # Candidates only: nothing lands where the cache reuses engines.
    assert sorted(p.name for p in robot.iterdir()) == ["candidates"]
    assert leftovers(robot) == [SKU]
    again = do_import(bundle, keys, robot)
    assert again.already and again.manifest_digest == result.manifest_digest


@pytest.mark.parametrize(("name", "at_once"), [("bundle", 4), ("bundle.tar", 1)])
def test_files_stream_in_at_once_where_the_source_allows_it(tmp_path, keys, name, at_once):
    """A folder's blobs are read several at a time (each its own descriptor); a tar's one by
    one (one file handle)."""
    files = cache_files(tmp_path / "reference")
    bundle = export(tmp_path / name, files, AGX, keys)
    counts, guard = [0, 0], threading.Lock()  # open now, most open at once

    def watched(blob):  # type: ignore[no-untyped-def]
        @contextmanager
        def opened(descriptor):  # type: ignore[no-untyped-def]
            with blob(descriptor) as chunks:
                with guard:
                    counts[0] += 1
                    counts[1] = max(counts)
                try:
                    time.sleep(0.05)  # long enough for the other workers to start theirs
                    yield chunks
                finally:
                    with guard:
                        counts[0] -= 1
        return opened

    robot = tmp_path / "robot"
    robot.mkdir()
    with open_bundle(bundle) as source:
        source.blob = watched(source.blob)  # type: ignore[method-assign]
        result = fetch_bundle(source, keys.public, AGX, robot / "candidates")
    assert counts[1] == at_once and result.files == len(files)
    for rel, path in files.items():
        assert (robot / "candidates" / SKU / "files" / rel).read_bytes() == path.read_bytes()


def test_layout_is_a_standard_oci_layout(tmp_path, keys):
    bundle = export(tmp_path / "bundle", cache_files(tmp_path / "c"), AGX, keys)
    assert json.loads((bundle / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((bundle / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == SKU
    for blob in (bundle / "blobs" / "sha256").iterdir():  # every blob is named by its digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    signed = json.loads((bundle / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    manifest = json.loads((bundle / "blobs" / "sha256" / signed["manifests"][0]["digest"][7:]).read_text())
    kinds = sorted({layer["mediaType"] for layer in manifest["layers"]})
    assert kinds == sorted(layout.MEDIA_TYPES.values())
    assert manifest["annotations"]["dev.engine-init.sku"] == SKU


def test_export_never_overwrites_and_leaves_no_temp(tmp_path, keys):
    files = cache_files(tmp_path / "c")
    (tmp_path / "taken.tar").write_bytes(b"mine")
    with pytest.raises(CacheWriteError, match="already exists"):
        export(tmp_path / "taken.tar", files, AGX, keys)
    assert (tmp_path / "taken.tar").read_bytes() == b"mine"
    export(tmp_path / "ok.tar", files, AGX, keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "keys", "ok.tar", "taken.tar"]


def test_a_fresh_robot_gets_its_candidates_folder_created(tmp_path, keys):
    bundle = export(tmp_path / "b", cache_files(tmp_path / "c"), AGX, keys)
    root = tmp_path / "fresh" / "cache" / "candidates"
    with open_bundle(bundle) as source:
        result = fetch_bundle(source, keys.public, AGX, root)
    assert result.folder == root / AGX.sku_key() and (result.folder / "index.json").is_file()


def test_a_candidates_folder_that_is_a_link_is_refused(tmp_path, keys):
    bundle = export(tmp_path / "b", cache_files(tmp_path / "c"), AGX, keys)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "candidates").symlink_to(tmp_path / "elsewhere")
    with open_bundle(bundle) as source, pytest.raises(CacheWriteError, match="cannot use"):
        fetch_bundle(source, keys.public, AGX, tmp_path / "candidates")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_tampered_blob_is_refused_and_nothing_stored(tmp_path, keys):
    files = cache_files(tmp_path / "c")
    bundle = export(tmp_path / "bundle", files, AGX, keys)
    blob = blob_of(bundle, files[next(n for n in files if n.endswith(".engine"))])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="do not match the signed digest"):
        do_import(bundle, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_a_longer_blob_is_refused_after_reading_one_chunk_past_its_size(tmp_path, keys):
    files = cache_files(tmp_path / "c")
    bundle = export(tmp_path / "bundle", files, AGX, keys)
    with open(blob_of(bundle, files["timing/trt10.3.0.30__sm87__orin.timing"]), "ab") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB that are never read whole
    started = time.monotonic()
    with pytest.raises(BundleError, match="more bytes than the signed"):
        do_import(bundle, keys, tmp_path / "robot")
    assert time.monotonic() - started < 10 and leftovers(tmp_path / "robot") == []


def test_another_key_is_refused_before_any_file_is_read(tmp_path, keys, other_keys):
    files = cache_files(tmp_path / "c")
    bundle = export(tmp_path / "bundle", files, AGX, other_keys)
    # A FIFO in place of a file: reading it first would hang or fail on it, not on the key.
    engine_blob = blob_of(bundle, files[next(n for n in files if n.endswith(".engine"))])
    engine_blob.unlink()
    os.mkfifo(engine_blob)
    with pytest.raises(BundleError, match="signature does not verify with public key"):
        do_import(bundle, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_an_unsigned_or_resigned_bundle_is_refused(tmp_path, keys):
    bundle = export(tmp_path / "bundle", cache_files(tmp_path / "c"), AGX, keys)
    index = json.loads((bundle / "index.json").read_text())
    signed_path = bundle / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    signed = json.loads(signed_path.read_text())
    del signed["manifests"][0]["annotations"]["dev.engine-init.signature"]
    raw = layout.canonical(signed)
    (bundle / "blobs" / "sha256" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    index["manifests"][0].update(digest="sha256:" + hashlib.sha256(raw).hexdigest(), size=len(raw))
    (bundle / "index.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match="not signed"):
        do_import(bundle, keys, tmp_path / "robot")


def test_a_bundle_of_another_sku_is_refused(tmp_path, keys):
    files = cache_files(tmp_path / "c")
    nx_bundle = export(tmp_path / "nx", files, NX, keys)
    with pytest.raises(BundleError, match=f"holds no engines for this host's SKU {SKU}"):
        do_import(nx_bundle, keys, tmp_path / "robot")
    # Relabelled for this SKU in index.json (unsigned), the signed identity still says NX.
    index = json.loads((nx_bundle / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = SKU
    (nx_bundle / "index.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"is for SKU sm87-8sm-16g-p3767-0000.*sm_count: 16 != 8"):
        do_import(nx_bundle, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_a_truncated_tar_is_refused(tmp_path, keys):
    bundle = export(tmp_path / "b.tar", cache_files(tmp_path / "c"), AGX, keys)
    with tarfile.open(bundle) as tar:
        last = tar.getmembers()[-1]
    # Inside the largest blob, inside the last member's data, inside the first headers.
    for cut in (bundle.stat().st_size // 2, last.offset_data + last.size // 2, 700):
        short = tmp_path / f"short-{cut}.tar"
        short.write_bytes(bundle.read_bytes()[:cut])
        with pytest.raises(BundleError):
            do_import(short, keys, tmp_path / "robot")
        assert leftovers(tmp_path / "robot") == []


@pytest.mark.parametrize("name", ["../../escaped.engine", "/etc/escaped", "timing/../../x",
                                  ".hidden", "models/x.engine", "a\nb", ""])
def test_a_signed_path_traversal_name_is_refused(tmp_path, keys, name):
    """Even a bundle signed by the fleet key cannot name a file outside the candidate folder."""
    payload = b"not an engine"
    blob = layout.Descriptor(layout.MEDIA_TYPES["engine"], "sha256:" + hashlib.sha256(payload).hexdigest(),
                             len(payload))
    identity_raw = layout.canonical({"sku_key": SKU, "identity": AGX.as_dict()})
    config = layout.descriptor_of(identity_raw, layout.IDENTITY_TYPE)
    manifest = layout.manifest_doc(config, [(name, blob)], SKU)
    described = layout.descriptor_of(manifest, layout.MANIFEST_TYPE)
    signed = layout.signed_index(described, sign_digest(keys.private, described.digest), "k", SKU)
    bundle = tmp_path / "evil"
    blobs = bundle / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for raw in (payload, identity_raw, manifest, signed):
        (blobs / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    named = layout.descriptor_of(signed, layout.INDEX_TYPE)
    (bundle / "index.json").write_bytes(layout.layout_index(named, SKU))
    with pytest.raises(BundleError, match="names a file"):
        do_import(bundle, keys, tmp_path / "robot" / "cache")
    assert not (tmp_path / "escaped.engine").exists() and not (tmp_path / "robot" / "escaped.engine").exists()
    assert leftovers(tmp_path / "robot" / "cache") == []


@pytest.mark.parametrize("plant", ["fifo", "symlink", "folder"])
def test_a_planted_blob_is_refused_never_followed(tmp_path, keys, plant):
    files = cache_files(tmp_path / "c")
    bundle = export(tmp_path / "bundle", files, AGX, keys)
    blob = blob_of(bundle, files["timing/trt10.3.0.30__sm87__orin.timing"])
    outside = tmp_path / "outside"
    outside.write_bytes(blob.read_bytes())  # the right bytes: a link would even verify
    blob.unlink()
    if plant == "fifo":
        os.mkfifo(blob)
    elif plant == "symlink":
        blob.symlink_to(outside)
    else:
        blob.mkdir()
    with pytest.raises(BundleError, match="is a link, FIFO or folder"):
        do_import(bundle, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_a_linked_blobs_folder_is_refused(tmp_path, keys):
    files = cache_files(tmp_path / "c")
    bundle = export(tmp_path / "bundle", files, AGX, keys)
    (bundle / "blobs").rename(tmp_path / "real-blobs")
    (bundle / "blobs").symlink_to(tmp_path / "real-blobs")
    with pytest.raises(BundleError, match="not an OCI image layout"):
        do_import(bundle, keys, tmp_path / "robot")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.FIFOTYPE, tarfile.LNKTYPE])
def test_a_link_or_fifo_in_a_tar_is_refused(tmp_path, keys, kind):
    bundle = export(tmp_path / "b.tar", cache_files(tmp_path / "c"), AGX, keys)
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]
    planted = tmp_path / "planted.tar"
    with tarfile.open(planted, "w") as out:
        for member, data in members:
            if member.name.startswith("blobs/sha256/") and member.size > 4000:
                member.type, member.linkname, member.size = kind, "/etc/passwd", 0
                data = None
            out.addfile(member, None if data is None else __import__("io").BytesIO(data))
    with pytest.raises(BundleError, match="not a regular file"):
        do_import(planted, keys, tmp_path / "robot")


def test_a_new_bundle_replaces_the_old_candidates_whole(tmp_path, keys):
    robot = tmp_path / "robot"
    first = do_import(export(tmp_path / "one", cache_files(tmp_path / "c1"), AGX, keys), keys, robot)
    files = cache_files(tmp_path / "c2")
    second = do_import(export(tmp_path / "two", files, AGX, keys), keys, robot)
    assert first.manifest_digest != second.manifest_digest and not second.already
    stored = robot / "candidates" / SKU / "files"
    for rel, source in files.items():
        assert (stored / rel).read_bytes() == source.read_bytes()
    assert leftovers(robot) == [SKU]


def test_a_planted_link_at_the_candidate_folder_is_refused(tmp_path, keys):
    robot = tmp_path / "robot"
    (robot / "candidates").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (robot / "candidates" / SKU).symlink_to(tmp_path / "elsewhere")
    bundle = export(tmp_path / "b", cache_files(tmp_path / "c"), AGX, keys)
    with pytest.raises(CacheWriteError, match="not a folder engine-init wrote"):
        do_import(bundle, keys, robot)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert leftovers(robot) == [SKU]  # the link, untouched


def test_describe_refuses_files_a_bundle_cannot_carry(tmp_path, keys):
    (tmp_path / "x.engine").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.engine")
    with pytest.raises(BundleError, match="cannot read"):
        describe({"fifo.engine": tmp_path / "fifo.engine"})
    with pytest.raises(BundleError, match="names a file"):
        describe({"../x.engine": tmp_path / "x.engine"})
    described = describe({"x.engine": tmp_path / "x.engine"})
    docs = documents(described, AGX, keys.private)
    (tmp_path / "x.engine").write_bytes(b"y")  # changed between hashing and copying
    with pytest.raises(BundleError, match="changed while it was being exported"):
        write_bundle(tmp_path / "out", described, docs)
    assert not (tmp_path / "out").exists()


# Ed25519 key files.

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
