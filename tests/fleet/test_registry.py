"""Push and pull against a real registry (CNCF Distribution, the Debian docker-registry package)."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import requests

from app.errors import BundleError, RegistryError
from app.fleet import check_repository, is_loopback
from app.fleet.bundle import describe, documents
from app.fleet.fetch import fetch_bundle
from app.fleet.layout import INDEX_TYPE
from app.fleet.registry import ArtifactAbsentError, RegistrySource, push
from tests.fleet.helpers import AGX, NX, cache_files, leftovers

SKU = AGX.sku_key()


def push_files(registry, files, identity, keys, name="fleet/engines"):
    described = describe(files)
    docs = documents(described, identity, keys.private)
    return push(registry.repository(name), described, docs, insecure=True), docs


def pull(registry, keys, cache_root, host=AGX, name="fleet/engines"):
    cache_root.mkdir(parents=True, exist_ok=True)
    source = RegistrySource(registry.repository(name), insecure=True)
    return fetch_bundle(source, keys.public, host, cache_root / "candidates")


def test_push_then_pull_into_a_fresh_cache(tmp_path, registry, keys):
    files = cache_files(tmp_path / "reference", engine_bytes=20 << 20)  # chunked uploads
    ref, docs = push_files(registry, files, AGX, keys)
    signed = "sha256:" + hashlib.sha256(docs.signed_index).hexdigest()
    assert ref == f"{registry.repository()}:{SKU}@{signed}"
    result = pull(registry, keys, tmp_path / "robot")
    assert (result.sku, result.files, result.already) == (SKU, len(files), False)
    for rel, source in files.items():
        assert (tmp_path / "robot" / "candidates" / SKU / "files" / rel).read_bytes() == source.read_bytes()
    assert pull(registry, keys, tmp_path / "robot").already
    # Pushing again uploads nothing new and names the same artifact.
    assert push_files(registry, files, AGX, keys)[0].split("@")[0] == ref.split("@")[0]


def test_no_artifact_for_this_sku(tmp_path, registry, keys):
    push_files(registry, cache_files(tmp_path / "c"), NX, keys)
    with pytest.raises(ArtifactAbsentError):
        pull(registry, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_a_blob_tampered_with_in_the_registry_storage(tmp_path, registry, keys):
    files = cache_files(tmp_path / "c")
    push_files(registry, files, AGX, keys)
    engine = files[next(n for n in files if n.endswith(".engine"))]
    stored = registry.blob_file("sha256:" + hashlib.sha256(engine.read_bytes()).hexdigest())
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="do not match the signed digest"):
        pull(registry, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_a_manifest_signed_by_another_key(tmp_path, registry, keys, other_keys):
    push_files(registry, cache_files(tmp_path / "c"), AGX, other_keys)
    with pytest.raises(BundleError, match="signature does not verify"):
        pull(registry, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_an_artifact_of_another_sku_under_this_sku_tag(tmp_path, registry, keys):
    """The NX bundle, validly signed, tagged as the AGX's: its signed identity gives it away."""
    _, docs = push_files(registry, cache_files(tmp_path / "c"), NX, keys)
    answer = requests.put(f"http://{registry.address}/v2/fleet/engines/manifests/{SKU}",
                          data=docs.signed_index, headers={"Content-Type": INDEX_TYPE}, timeout=10)
    assert answer.status_code == 201, answer.text
    with pytest.raises(BundleError, match=r"is for SKU sm87-8sm-16g.*sm_count: 16 != 8"):
        pull(registry, keys, tmp_path / "robot")
    assert leftovers(tmp_path / "robot") == []


def test_two_pulls_at_once_store_one_complete_copy(tmp_path, registry, keys):
    files = cache_files(tmp_path / "c", engine_bytes=8 << 20)
    push_files(registry, files, AGX, keys)
    results: list[object] = []

    def one() -> None:
        try:
            results.append(pull(registry, keys, tmp_path / "robot"))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.already for r in results) == [False, True], results  # type: ignore[attr-defined]
    for rel, source in files.items():
        assert (tmp_path / "robot" / "candidates" / SKU / "files" / rel).read_bytes() == source.read_bytes()
    assert leftovers(tmp_path / "robot") == [SKU]


def test_a_registry_that_is_down_is_reported_at_once(tmp_path, registry, keys):
    address = registry.address
    registry.address = "127.0.0.1:9"  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(RegistryError, match="refused the connection") as caught:
        pull(registry, keys, tmp_path / "robot")
    assert "did not answer" not in str(caught.value)  # refused at once, not a timeout
    assert time.monotonic() - started < 5  # no sleeping retries
    registry.address = address


def test_a_registry_that_accepts_nothing_is_reported_as_a_timeout():
    """A socket that listens but never answers (the kernel completes the connection, nothing
    reads it): the error says how long it waited, not that it was refused."""
    import socket

    from app.config_sections import FleetConfig

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        port = listening.getsockname()[1]
        source = RegistrySource(f"127.0.0.1:{port}/fleet/engines", insecure=True,
                                limits=FleetConfig(blob_grace_s=0.3))
        with pytest.raises(RegistryError, match=r"did not answer within 0.3 s") as caught:
            source.signed_index(SKU)
    assert "refused" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1.2.3"])
def test_a_registry_on_loopback_is_plain_http_without_insecure(tmp_path, registry, keys, host):
    files = cache_files(tmp_path / "c")
    push_files(registry, files, AGX, keys)
    port = registry.address.rsplit(":", 1)[1]
    if host == "127.1.2.3":  # the registry listens on 127.0.0.1 only: reached over plain HTTP
        with pytest.raises(RegistryError, match="refused the connection"):
            RegistrySource(f"{host}:{port}/fleet/engines", insecure=False).signed_index(SKU)
        return
    source = RegistrySource(f"{host}:{port}/fleet/engines", insecure=False)
    assert source.client.prefix == "http"
    result = fetch_bundle(source, keys.public, AGX, tmp_path / "robot" / "candidates")
    assert result.files == len(files)


def test_a_repository_the_registry_does_not_know_is_an_error_naming_it(tmp_path, registry, keys):
    push_files(registry, cache_files(tmp_path / "c"), AGX, keys)
    with pytest.raises(RegistryError, match=r"has no repository fleet/engnes \(NAME_UNKNOWN\)"):
        pull(registry, keys, tmp_path / "robot", name="fleet/engnes")
    assert leftovers(tmp_path / "robot") == []


@pytest.mark.parametrize("bad", ["no-slash", "https://host/x", "host/x:tag", "host/x@sha256:00"])
def test_a_malformed_repository_is_a_config_error(bad):
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="is not host"):
        RegistrySource(bad, insecure=True)


@pytest.mark.parametrize("bad", ["Fleet/Engines", "fleet/Engines", "fleet//engines", "fleet/engines/",
                                 "fleet/-engines", "fleet/engines.", "fleet/a..b", "fleet/a b"])
def test_a_name_outside_the_oci_grammar_is_a_config_error_before_any_request(bad):
    from app.errors import ConfigError

    # Port 9 (discard): nothing listens, so a request would be a RegistryError, not this.
    with pytest.raises(ConfigError, match="is not a registry repository name") as caught:
        RegistrySource(f"127.0.0.1:9/{bad}", insecure=True)
    assert "lowercase letters and digits" in caught.value.hint


def test_a_404_that_is_no_oci_error_document_is_a_registry_error_never_absent(
        tmp_path, registry, keys, monkeypatch):
    """The registry answers a name outside the grammar with a plain '404 page not found' (as
    a web server or proxy in front of it would any path): the name check is turned off here so
    that this real answer reaches the 404 handling of the pull and of the TUF fetcher."""
    import re

    from tuf.api import exceptions

    from app.fleet.tuf_client import OciFetcher

    push_files(registry, cache_files(tmp_path / "c"), AGX, keys)
    monkeypatch.setattr("app.fleet._NAME", re.compile(r".+"))
    where = registry.repository("Fleet/Engines")
    with pytest.raises(RegistryError, match=r"HTTP 404 and no OCI error document") as caught:
        RegistrySource(where, insecure=True).signed_index(SKU)
    assert where in str(caught.value)
    with pytest.raises(exceptions.DownloadError) as fetched:  # python-tuf wraps what the fetcher raises
        list(OciFetcher(where, insecure=True).fetch("oci://x/timestamp.json"))
    assert isinstance(fetched.value.__cause__, RegistryError), fetched.value
    assert "no OCI error document" in str(fetched.value.__cause__)


def test_the_tuf_fetcher_hands_python_tuf_the_registrys_own_status(monkeypatch):
    """A 403 reaches python-tuf as 403 (both mean "no such version" to it; the hint differs).
    The answer is stood in: CNCF Distribution without a token server answers 401, never 403."""
    from tuf.api import exceptions

    from app.fleet.tuf_client import OciFetcher

    for status in (403, 404):
        monkeypatch.setattr(RegistrySource, "document",
                            lambda self, *args, status=status, **kw: (b"", ["DENIED"], status))
        with pytest.raises(exceptions.DownloadHTTPError) as caught:
            list(OciFetcher("127.0.0.1:9/fleet/engines", insecure=True)._fetch("x/timestamp.json"))
        assert caught.value.status_code == status


def test_credentials_come_from_the_docker_config_file(tmp_path, keys, monkeypatch):
    """A registry with htpasswd (bcrypt) logins: pull works with the Docker config file's
    credentials, and without them fails with a one-line error naming `docker login`."""
    import base64
    import json
    import warnings

    from tests.fleet.helpers import serve_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt", reason="bcrypt hashes from the crypt module (< 3.13)")
        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: fast
    (tmp_path / "htpasswd").write_text(f"robot:{hashed}\n")
    auth = f"auth:\n  htpasswd:\n    realm: fleet\n    path: {tmp_path / 'htpasswd'}\n"
    with serve_registry(tmp_path / "registry", auth) as server:
        docker = tmp_path / "docker"
        docker.mkdir()
        token = base64.b64encode(b"robot:s3cret").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {server.address: {"auth": token}}}))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json to fall back on
        monkeypatch.delenv("DOCKER_CONFIG", raising=False)
        with pytest.raises(RegistryError, match="credentials"):
            pull(server, keys, tmp_path / "robot")
        monkeypatch.setenv("DOCKER_CONFIG", str(docker))
        files = cache_files(tmp_path / "c")
        push_files(server, files, AGX, keys)
        assert not pull(server, keys, tmp_path / "robot").already


@pytest.mark.parametrize("insecure", [True, False])
def test_the_unreachable_hint_offers_insecure_only_when_it_is_off(insecure, monkeypatch):
    """With plain HTTP already asked for (--insecure or fleet.insecure), it is not the fix.
    Loopback is plain HTTP anyway: the test treats 127.0.0.1 as a remote host so that the
    hint's other branch is reached without sending anything off this machine."""
    monkeypatch.setattr("app.fleet.is_loopback", lambda host: False)
    with pytest.raises(RegistryError, match="refused the connection") as caught:
        RegistrySource("127.0.0.1:9/fleet/engines", insecure=insecure).signed_index(SKU)  # discard port
    assert ("--insecure" in caught.value.hint) is not insecure
    assert caught.value.hint.startswith("check the network and --repository")


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1", True), ("127.9.9.9:80", True), ("[::1]:5000", True),
    ("registry.example.com:5000", False), ("10.0.0.1:5000", False), ("localhost.example.com", False),
    ("[2001:db8::1]:443", False)])
def test_which_hosts_are_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("good", ["fleet/engines", "a/b.c/d__e", "x/a--b_c", "engines", "0/9"])
def test_names_in_the_oci_grammar_are_accepted(good):
    assert check_repository(f"localhost:5000/{good}") == "localhost:5000"
