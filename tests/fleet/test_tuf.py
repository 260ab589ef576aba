"""The fleet's TUF metadata against a real registry (CNCF Distribution on loopback): an operator
initialises a root of 2 of 3 offline keys, releases a pushed bundle, rotates and revokes keys;
a robot pulls through python-tuf's Updater and keeps its trusted metadata in its candidates.
Every key is a real Ed25519 key file; every metadata file is really signed and pushed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from app.errors import BundleError, ConfigError
from app.fleet.bundle import KeyFile, describe, documents, load_key_files
from app.fleet.candidates import trust_folder
from app.fleet.registry import push
from app.fleet.tuf_client import pull_release, push_metadata, released_bundle
from app.fleet.tuf_repo import Repo
from app.fleet.tuf_verify import verified_targets
from tests.fleet.helpers import AGX, NX, Keys, cache_files, make_keys

SKU = AGX.sku_key()


@dataclass
class Fleet:
    """An operator's metadata folder and keys, a registry repository, a robot's cache."""

    meta: Path
    repository: str
    keys: dict[str, KeyFile]
    bundle_keys: Keys
    cache: Path
    tmp: Path

    def repo(self) -> Repo:
        return Repo.load(self.meta)

    def signing(self, *names: str) -> list[KeyFile]:
        return [self.keys[n] for n in names]

    def push_bundle(self, tag: str = "a") -> str:
        """Push a bundle of fresh engine bytes for the AGX SKU; its signed index digest."""
        described = describe(cache_files(self.tmp / f"reference-{tag}"))
        docs = documents(described, AGX, self.bundle_keys.private)
        return push(self.repository, described, docs, insecure=True).rsplit("@", 1)[1]

    def release(self, digest: str, *signers: str) -> Repo:
        repo = self.repo()
        index, files = released_bundle(self.repository, SKU, digest, insecure=True)
        repo.release(SKU, index, files, self.signing(*(signers or ("targets", "online"))),
                     days=None, timestamp_days=None)
        publish(repo)
        return repo

    def pull(self, repository: str | None = None):  # type: ignore[no-untyped-def]
        return pull_release(repository or self.repository, AGX, self.cache / "candidates",
                            self.meta / "1.root.json", insecure=True, public=None,
                            lock_timeout_s=10)[1]

    def stored_index(self) -> str:
        raw = (self.cache / "candidates" / SKU / "index.json").read_bytes()
        return "sha256:" + hashlib.sha256(raw).hexdigest()


def publish(repo: Repo) -> None:
    repo.save()
    push_metadata(repo.repository, repo.written, insecure=True)
    repo.written = []


@pytest.fixture
def fleet(tmp_path, registry, keys) -> Fleet:
    names = ("root1", "root2", "root3", "targets", "online", "targets2", "root4", "agx")
    made = {n: make_keys(tmp_path / "keys", n) for n in names}
    loaded = dict(zip(names, load_key_files([made[n].private_file for n in names]), strict=True))
    fleet = Fleet(tmp_path / "meta", registry.repository(), loaded, keys, tmp_path / "robot", tmp_path)
    fleet.cache.mkdir()
    repo = Repo(fleet.meta)
    repo.init(fleet.repository, fleet.signing("root1", "root2", "root3"), 2, loaded["targets"],
              loaded["online"], timestamp_days=None)
    publish(repo)
    return fleet


def test_release_then_pull_then_the_boot_check(fleet):
    digest = fleet.push_bundle()
    fleet.release(digest)
    result = fleet.pull()
    assert result is not None and not result.already and result.files == 8
    assert fleet.stored_index() == digest
    tuf = fleet.cache / "candidates" / "tuf"
    assert sorted(p.name for p in tuf.iterdir()) == ["root.json", "root_history", "snapshot.json",
                                                      "targets.json", "timestamp.json"]
    assert fleet.pull().already
    folder = fleet.cache / "candidates" / SKU
    trust = trust_folder(folder, SKU, None, fleet.meta / "1.root.json", fleet.repository)
    assert trust.reason == "" and len(trust.files) == 8
    # The same candidates, checked against another repository's name, are refused.
    other = trust_folder(folder, SKU, None, fleet.meta / "1.root.json", "registry.example/staging")
    assert "is for repository" in other.reason and "not registry.example/staging" in other.reason


def test_a_bundle_pushed_but_not_released_is_not_pulled(fleet):
    released = fleet.push_bundle("a")
    fleet.release(released)
    newer = fleet.push_bundle("b")  # the SKU's tag now names this one
    assert newer != released
    fleet.pull()
    assert fleet.stored_index() == released


def test_nothing_released_for_this_sku(fleet):
    fleet.push_bundle()
    assert fleet.pull() is None
    assert (fleet.cache / "candidates" / "tuf" / "timestamp.json").is_file()


def test_rollback_is_refused_naming_both_versions(fleet):
    fleet.release(fleet.push_bundle())  # timestamp v2
    old = (fleet.meta / "timestamp.json").read_bytes()
    fleet.pull()
    repo = fleet.repo()
    repo.timestamp(fleet.signing("online"), days=None)  # v3
    publish(repo)
    fleet.pull()
    push_metadata(fleet.repository, [("timestamp.json", old)], insecure=True)  # re-tagged as current
    with pytest.raises(BundleError, match=r"rollback refused: the registry serves timestamp version 2, "
                                          r"older than version 3 that this robot already trusts"):
        fleet.pull()


def test_an_expired_timestamp_is_refused(fleet):
    digest = fleet.push_bundle()
    fleet.release(digest)
    repo = fleet.repo()
    repo.timestamp(fleet.signing("online"), days=-1)  # validly signed, expired yesterday
    publish(repo)
    with pytest.raises(BundleError, match=r"has expired .*timestamp.json is expired"):
        fleet.pull()
    assert not (fleet.cache / "candidates" / SKU).exists()


def test_one_of_three_root_keys_cannot_change_root(fleet):
    with pytest.raises(ConfigError, match=r"root needs 2 signature\(s\) of its 3 key\(s\); .* hold 1"):
        fleet.repo().change_keys("root", fleet.signing("root1"), add=fleet.signing("root4"), remove=[],
                                 threshold=None, timestamp_days=None)
    assert not (fleet.meta / "2.root.json").exists()
    # A root v2 made anyway with one key (someone holding root1 alone) is refused by robots.
    fleet.release(fleet.push_bundle())
    fleet.pull()
    current = Metadata[Root].from_bytes((fleet.meta / "1.root.json").read_bytes())
    forged = Root.from_dict(current.signed.to_dict())
    forged.version = 2
    forged.add_key(fleet.keys["root4"].key, "targets")
    md = Metadata(forged)
    md.sign(fleet.keys["root1"].signer)  # type: ignore[arg-type]
    push_metadata(fleet.repository, [("2.root.json", md.to_bytes())], insecure=True)
    with pytest.raises(BundleError, match=r"does not verify: .*root was signed by 1/2 keys"):
        fleet.pull()
    # The same root planted in the candidates folder is refused at boot.
    (fleet.cache / "candidates" / "tuf" / "root_history" / "2.root.json").write_bytes(md.to_bytes())
    reason = trust_folder(fleet.cache / "candidates" / SKU, SKU, None, fleet.meta / "1.root.json",
                          fleet.repository).reason
    assert "root was signed by 1/2 keys" in reason


def forge_targets(fleet: Fleet, signer: KeyFile) -> None:
    """Someone holding ``signer`` (and the online key) releases other bytes for the SKU."""
    repo = fleet.repo()
    md = repo.md["targets"]
    for target in md.signed.targets.values():
        target.hashes = {"sha256": "0" * 64}
    md.signed.version += 1
    md.signatures.clear()
    md.sign(signer.signer)
    repo._write(f"{md.signed.version}.targets.json", md)
    repo.timestamp(fleet.signing("online"), days=None)
    publish(repo)


def test_after_rotation_the_old_targets_key_is_refused(fleet):
    fleet.release(fleet.push_bundle())
    repo = fleet.repo()
    version = repo.change_keys("targets", fleet.signing("root1", "root3", "targets2", "online"),
                               add=fleet.signing("targets2"), remove=fleet.signing("targets"),
                               threshold=None, timestamp_days=None)
    assert version == 2
    publish(repo)
    assert fleet.pull() is not None  # root v2, and the release signed again by the new key
    forge_targets(fleet, fleet.keys["targets"])
    with pytest.raises(BundleError, match=r"does not verify: .*targets was signed by 0/1 keys"):
        fleet.pull()


def test_revocation_walks_two_root_versions(fleet):
    digest = fleet.push_bundle()
    fleet.release(digest)
    repo = fleet.repo()
    repo.change_keys("targets", fleet.signing("root1", "root2"), add=fleet.signing("targets2"),
                     remove=[], threshold=None, timestamp_days=None)
    repo.change_keys("targets", fleet.signing("root2", "root3", "targets2", "online"), add=[],
                     remove=[load_key_files([fleet.tmp / "keys" / "targets.pub.pem"])[0]],
                     threshold=None, timestamp_days=None)
    publish(repo)
    assert fleet.pull() is not None and fleet.stored_index() == digest
    assert sorted(p.name for p in (fleet.cache / "candidates" / "tuf" / "root_history").iterdir()) == [
        "1.root.json", "2.root.json", "3.root.json"]
    root, folder = fleet.meta / "1.root.json", fleet.cache / "candidates" / SKU
    assert trust_folder(folder, SKU, None, root, fleet.repository).reason == ""  # roots 1 -> 3, offline
    forge_targets(fleet, fleet.keys["targets"])
    with pytest.raises(BundleError, match="targets was signed by 0/1 keys"):
        fleet.pull()
    # Planted in the candidates folder instead (a compromised puller): refused at boot too.
    forged = Repo.load(fleet.meta).md["targets"].to_bytes()
    (fleet.cache / "candidates" / "tuf" / "targets.json").write_bytes(forged)
    reason = trust_folder(folder, SKU, None, root, fleet.repository).reason
    assert "does not verify" in reason and "targets was signed by 0/1 keys" in reason


def test_metadata_of_another_repository_is_refused(fleet, registry):
    """Staging signs with the same keys; its metadata copied into production is refused."""
    staging = registry.repository("fleet/staging")
    repo = Repo(fleet.tmp / "staging-meta")
    repo.init(staging, fleet.signing("root1", "root2", "root3"), 2, fleet.keys["targets"],
              fleet.keys["online"], timestamp_days=None)
    index, files = released_bundle(fleet.repository, SKU, fleet.push_bundle(), insecure=True)
    repo.release(SKU, index, files, fleet.signing("targets", "online"), days=None, timestamp_days=None)
    push_metadata(fleet.repository, [w for w in repo.written if not w[0].endswith("root.json")],
                  insecure=True)
    with pytest.raises(BundleError, match=rf"targets metadata is for repository {staging}, "
                                          rf"not {fleet.repository}"):
        fleet.pull()
    assert not (fleet.cache / "candidates" / SKU).exists()


def test_the_boot_check_refuses_what_the_metadata_does_not_release(fleet):
    """The migration: candidates stored by the annotation-only path (an older pull, import)
    are refused at boot, naming the fix, until a pull stores what the fleet released."""
    from app.fleet.fetch import fetch_bundle
    from app.fleet.registry import RegistrySource

    root = fleet.meta / "1.root.json"
    folder = fleet.cache / "candidates" / SKU
    released = fleet.push_bundle("a")

    def annotation_only_pull() -> None:
        fetch_bundle(RegistrySource(fleet.repository, insecure=True), fleet.bundle_keys.public, AGX,
                     fleet.cache / "candidates")

    annotation_only_pull()
    reason = trust_folder(folder, SKU, None, root, fleet.repository).reason
    assert "no verified fleet metadata" in reason and "run `engine-init pull`" in reason
    fleet.release(released)
    fleet.pull()
    assert trust_folder(folder, SKU, None, root, fleet.repository).reason == ""
    fleet.push_bundle("b")  # pushed, never released, then stored by the old path
    annotation_only_pull()
    reason = trust_folder(folder, SKU, None, root, fleet.repository).reason
    assert f"the fleet released {released}" in reason and "run `engine-init pull`" in reason
    with pytest.raises(BundleError, match="no verified fleet metadata"):
        verified_targets(fleet.tmp, root, None, SKU)


@pytest.mark.parametrize("plant", ["fifo", "huge", "not-root", "one-signature"])
def test_a_hostile_provisioned_root_is_a_config_error(fleet, plant):
    root = fleet.tmp / "root.json"
    if plant == "fifo":
        os.mkfifo(root)  # a reader that opened it would wait forever for a writer
    elif plant == "huge":
        with open(root, "wb") as f:
            f.truncate(1 << 30)  # sparse: refused by its size, unread
    elif plant == "not-root":
        root.write_bytes((fleet.meta / "timestamp.json").read_bytes())
    else:  # root v1 whose signatures fall short of its own threshold
        md = Metadata[Root].from_bytes((fleet.meta / "1.root.json").read_bytes())
        md.signatures.popitem()
        md.signatures.popitem()  # 1 of the 3 made at init: under the threshold of 2
        root.write_bytes(md.to_bytes())
    with pytest.raises(ConfigError, match=rf"fleet.trusted_root_file {root} "):
        pull_release(fleet.repository, AGX, fleet.cache / "candidates", root, insecure=True, public=None,
                     lock_timeout_s=10)
    assert not (fleet.cache / "candidates" / "tuf").exists()


@pytest.mark.parametrize("plant", ["fifo", "link"])
def test_planted_trusted_metadata_is_never_followed_nor_waited_for(fleet, plant):
    fleet.release(fleet.push_bundle())
    fleet.pull()
    folder = fleet.cache / "candidates" / SKU
    stored = fleet.cache / "candidates" / "tuf" / "timestamp.json"
    copy = fleet.tmp / "elsewhere.json"
    copy.write_bytes(stored.read_bytes())
    stored.unlink()
    if plant == "fifo":
        os.mkfifo(stored)
    else:
        stored.symlink_to(copy)
    reason = trust_folder(folder, SKU, None, fleet.meta / "1.root.json", fleet.repository).reason
    assert "no verified fleet metadata" in reason
    assert fleet.pull() is not None  # taken as absent, fetched again, and replaced
    assert stored.is_file() and not stored.is_symlink()
    assert trust_folder(folder, SKU, None, fleet.meta / "1.root.json", fleet.repository).reason == ""


def test_oversized_metadata_from_the_registry_is_refused(fleet):
    fleet.release(fleet.push_bundle())
    push_metadata(fleet.repository, [("timestamp.json", b" " * 100_000)], insecure=True)
    with pytest.raises(BundleError, match="larger than allowed"):
        fleet.pull()


def test_at_boot_expired_metadata_promotes_nothing(fleet):
    fleet.release(fleet.push_bundle())
    fleet.pull()
    repo = fleet.repo()
    repo.timestamp(fleet.signing("online"), days=-1)  # as if this robot had been offline since
    (fleet.cache / "candidates" / "tuf" / "timestamp.json").write_bytes(repo.written[-1][1])
    reason = trust_folder(fleet.cache / "candidates" / SKU, SKU, None, fleet.meta / "1.root.json",
                          fleet.repository).reason
    assert "has expired" in reason and "keeps the engines it already has" in reason


def test_a_key_file_holding_two_keys_is_refused(fleet):
    both = fleet.tmp / "both.pem"
    keys = fleet.tmp / "keys"
    both.write_bytes((keys / "targets.pem").read_bytes() + (keys / "targets2.pem").read_bytes())
    with pytest.raises(ConfigError, match="holds 2 PEM blocks"):
        load_key_files([both])


def test_a_command_short_of_a_key_writes_nothing(fleet):
    digest = fleet.push_bundle()
    before = sorted(p.name for p in fleet.meta.iterdir())
    repo = fleet.repo()
    index, files = released_bundle(fleet.repository, SKU, digest, insecure=True)
    with pytest.raises(ConfigError, match=r"snapshot needs 1 signature\(s\) of its 1 key\(s\); .* hold 0"):
        repo.release(SKU, index, files, fleet.signing("targets"), days=None, timestamp_days=None)
    assert sorted(p.name for p in fleet.meta.iterdir()) == before


def test_trusted_metadata_behind_a_link_counts_as_absent(fleet):
    fleet.release(fleet.push_bundle())
    fleet.pull()
    tuf = fleet.cache / "candidates" / "tuf"
    elsewhere = fleet.tmp / "elsewhere-tuf"
    tuf.rename(elsewhere)
    tuf.symlink_to(elsewhere)
    reason = trust_folder(fleet.cache / "candidates" / SKU, SKU, None, fleet.meta / "1.root.json",
                          fleet.repository).reason
    assert "no verified fleet metadata" in reason
    assert fleet.pull() is not None  # refreshed from the provisioned root; the link replaced
    assert tuf.is_dir() and not tuf.is_symlink() and elsewhere.is_dir()


def test_renewing_root_keeps_robots_pulling(fleet):
    digest = fleet.push_bundle()
    fleet.release(digest)
    repo = fleet.repo()
    assert repo.change_keys("root", fleet.signing("root2", "root3"), add=[], remove=[], threshold=None,
                            timestamp_days=None) == 2
    publish(repo)
    assert fleet.pull() is not None and fleet.stored_index() == digest
    assert trust_folder(fleet.cache / "candidates" / SKU, SKU, None, fleet.meta / "1.root.json",
                        fleet.repository).reason == ""


def test_a_sku_delegated_to_its_own_key(fleet):
    """The SKU's build host releases it with its own key, without the top-level release key,
    and its key releases nothing for another SKU."""
    first = fleet.push_bundle("a")
    fleet.release(first)
    fleet.pull()
    repo = fleet.repo()
    assert repo.delegate(SKU, fleet.signing("agx"), 1, fleet.signing("targets", "online"),
                         timestamp_days=None) == 1
    publish(repo)
    assert fleet.pull().already  # the release moved into the SKU's role, unchanged
    root, folder = fleet.meta / "1.root.json", fleet.cache / "candidates" / SKU
    assert trust_folder(folder, SKU, None, root, fleet.repository).reason == ""
    second = fleet.push_bundle("b")
    with pytest.raises(ConfigError, match=rf"sku-[0-9a-f]{{16}} \(the role of {SKU}\) needs 1 signature"):
        fleet.release(second, "targets", "online")  # the top-level key no longer releases it
    fleet.release(second, "agx", "online")
    assert not fleet.pull().already and fleet.stored_index() == second
    assert trust_folder(folder, SKU, None, root, fleet.repository).reason == ""
    # The SKU's key lists a release for another SKU in its role: robots of that SKU never look.
    repo = fleet.repo()
    role = next(r for r in repo.md if r.startswith("sku-"))
    nx = NX.sku_key()
    md = repo.md[role]
    md.signed.targets[f"{nx}/index.json"] = md.signed.targets[f"{SKU}/index.json"]
    md.signed.version += 1
    md.signatures.clear()
    md.sign(fleet.keys["agx"].signer)
    repo._write(f"{md.signed.version}.{role}.json", md)
    repo.timestamp(fleet.signing("online"), days=None)
    publish(repo)
    (fleet.tmp / "nx").mkdir()
    trusted, result = pull_release(fleet.repository, NX, fleet.tmp / "nx" / "candidates", root, insecure=True,
                                   public=None, lock_timeout_s=10)
    assert result is None and f"{nx}/index.json" not in trusted["targets"].targets
