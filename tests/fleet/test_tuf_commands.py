"""``engine-init fleet trust ...`` and ``pull`` under TUF through real processes: an operator
initialises the fleet's root (2 of 3 keys) and releases what a reference host pushed; a robot
provisioned with 1.root.json pulls and boots with every engine promoted. Both hosts are this
machine (ONNX Runtime backend, its SKU key); the registry is real, on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from app.fleet.bundle import load_key_files
from app.fleet.tuf_client import push_metadata
from app.fleet.tuf_repo import Repo
from tests.fleet.helpers import (
    make_keys,
    one_error_line,
    sigterm_when_held,
    stalling_registry,
    trickling_registry,
)
from tests.helpers import REPO, cli, json_events, write_job_config


@pytest.fixture
def operator(tmp_path, corpus, registry):
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("root1", "root2", "root3", "root4", "targets", "online", "bundle"):
        made = cli("fleet", "keygen", str(keys / f"{name}.pem"), str(keys / f"{name}.pub.pem"))
        assert made.returncode == 0, made.stderr
    repo = registry.repository()
    meta = tmp_path / "meta"
    init = cli("fleet", "trust", "init", str(meta), "--repository", repo, "--threshold", "2",
               "--root-key", str(keys / "root1.pem"), "--root-key", str(keys / "root2.pem"),
               "--root-key", str(keys / "root3.pub.pem"),  # offline: only its public half here
               "--targets-key", str(keys / "targets.pem"), "--online-key", str(keys / "online.pem"),
               "--insecure")
    assert init.returncode == 0, init.stderr
    assert "threshold 2" in init.stdout and "timestamp.json" in init.stdout
    reference = write_job_config(tmp_path / "reference", corpus)
    assert cli("--config", str(reference), "run").returncode == 0
    sku = json.loads(cli("--config", str(reference), "status", "--json").stdout)["sku"]
    robot = write_job_config(tmp_path / "robot", corpus, fleet={
        "trusted_root_file": str(meta / "1.root.json"), "repository": repo, "insecure": True})
    (tmp_path / "robot" / "cache").mkdir()
    return {"keys": keys, "meta": meta, "repo": repo, "reference": reference, "robot": robot, "sku": sku}


@pytest.mark.slow  # a reference run and eight CLI processes: ~5 s
def test_init_push_release_pull_and_boot(operator):
    o, keys = operator, operator["keys"]
    pushed = cli("--config", str(o["reference"]), "push", "--repository", o["repo"], "--insecure",
                 "--private-key", str(keys / "bundle.pem"))
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip().rsplit("@", 1)[1]
    nothing = cli("--config", str(o["robot"]), "pull")
    assert nothing.returncode == 0 and f"no release for {o['sku']}" in nothing.stdout
    # The SKU gets a role of its own: its build host's key releases it, not the top-level key.
    delegated = cli("fleet", "trust", "delegate", str(o["meta"]), o["sku"], "--sku-key",
                    str(keys / "bundle.pem"), "--key", str(keys / "targets.pem"), "--key",
                    str(keys / "online.pem"), "--insecure")
    assert delegated.returncode == 0 and "role v1" in delegated.stdout, delegated.stderr
    released = cli("fleet", "trust", "release", str(o["meta"]), o["sku"], "--digest", digest,
                   "--key", str(keys / "bundle.pem"), "--key", str(keys / "online.pem"), "--insecure")
    assert released.returncode == 0, released.stderr
    assert f"released {o['sku']}@{digest}: 9 file(s), targets v2" in released.stdout  # the role's v2
    pulled = cli("--config", str(o["robot"]), "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert "stored: 9 file(s)" in pulled.stdout
    [trusted] = [e["kv"] for e in json_events(pulled.stderr) if e["kind"] == "c10.fleet.metadata.trusted"]
    assert (trusted["root_version"], trusted["timestamp_version"]) == (1, 3)
    booted = cli("--config", str(o["robot"]), "run")
    assert booted.returncode == 0, booted.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in booted.stdout
    # Offline long enough for the metadata it holds to expire: the engines it promoted stay
    # (this robot published them), nothing new would be promoted.
    repo = Repo.load(o["meta"])
    repo.timestamp(load_key_files([keys / "online.pem"]), days=-1)
    tuf = o["robot"].parent / "cache" / "candidates" / "tuf"
    (tuf / "timestamp.json").write_bytes(repo.written[-1][1])
    offline = cli("--config", str(o["robot"]), "run")
    assert offline.returncode == 0, offline.stderr
    assert "ready: 0 built, 3 reused, 0 promoted" in offline.stdout


@pytest.mark.slow  # a reference run and eight CLI processes: ~5 s
def test_rollback_threshold_and_unreachable_registry_exit_codes(operator):
    o, keys = operator, operator["keys"]
    old = (o["meta"] / "timestamp.json").read_bytes()  # version 1
    stamped = cli("fleet", "trust", "timestamp", str(o["meta"]), "--key", str(keys / "online.pem"),
                  "--insecure")
    assert stamped.returncode == 0 and "timestamp v2 expires" in stamped.stdout, stamped.stderr
    first = cli("--config", str(o["robot"]), "pull")
    assert first.returncode == 0, first.stderr
    push_metadata(o["repo"], [("timestamp.json", old)], insecure=True)
    rolled = cli("--config", str(o["robot"]), "pull")
    assert rolled.returncode == 65
    assert ("rollback refused: the registry serves timestamp version 1, older than version 2"
            in one_error_line(rolled))
    # One root key of three cannot change root: nothing written, nothing pushed.
    alone = cli("fleet", "trust", "add-key", str(o["meta"]), "root", str(keys / "root4.pub.pem"),
                "--key", str(keys / "root1.pem"), "--insecure")
    assert alone.returncode == 78
    assert "root needs 2 signature(s) of its 3 key(s)" in one_error_line(alone)
    assert not (o["meta"] / "2.root.json").exists()
    two = cli("fleet", "trust", "add-key", str(o["meta"]), "root", str(keys / "root4.pub.pem"),
              "--key", str(keys / "root1.pem"), "--key", str(keys / "root2.pem"), "--insecure")
    assert two.returncode == 0 and "root v2" in two.stdout, two.stderr
    # The online key rotated (2 of the now 4 root keys, the old online key for snapshot): the
    # robot follows root v3 and the re-signed timestamp at its next pull.
    made = cli("fleet", "keygen", str(keys / "online2.pem"), str(keys / "online2.pub.pem"))
    assert made.returncode == 0
    rotated = cli("fleet", "trust", "rotate-key", str(o["meta"]), "timestamp", str(keys / "online.pub.pem"),
                  str(keys / "online2.pem"), "--key", str(keys / "root1.pem"), "--key",
                  str(keys / "root2.pem"), "--key", str(keys / "online.pem"), "--insecure")
    assert rotated.returncode == 0 and "root v3" in rotated.stdout, rotated.stderr
    followed = cli("--config", str(o["robot"]), "pull")
    assert followed.returncode == 0, followed.stderr
    [trusted] = [e["kv"] for e in json_events(followed.stderr) if e["kind"] == "c10.fleet.metadata.trusted"]
    assert (trusted["root_version"], trusted["timestamp_version"]) == (3, 3)
    # The registry's copy lost (a new registry): the operator uploads the folder again.
    again = cli("fleet", "trust", "push", str(o["meta"]), "--insecure")
    assert again.returncode == 0 and "pushed every file" in again.stdout, again.stderr
    assert cli("--config", str(o["robot"]), "pull").returncode == 0
    down = cli("--config", str(o["robot"]), "pull", "--repository", "127.0.0.1:9/fleet/engines")
    assert down.returncode == 69 and "refused the connection" in one_error_line(down)


@pytest.mark.slow  # waits 4 s for the pull to get stuck
def test_sigterm_ends_a_pull_stuck_on_the_metadata_within_2_s(operator):
    with trickling_registry() as slow:
        argv = [sys.executable, "-m", "app", "--config", str(operator["robot"]), "pull",
                "--repository", slow]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # started, probed the host, and waiting on the trickle
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 143 and time.monotonic() - started < 2, stderr
        assert "interrupted by SIGTERM" in stderr


@pytest.mark.slow  # the operator's fixture: a reference run
def test_a_registry_that_trickles_the_metadata_makes_pull_exit_69_fast(operator):
    """The metadata is read within the pull's limits, as the bundle is (fleet.blob_grace_s,
    fleet.min_rate_kib_s): a registry that trickles ends the pull with 69, not after minutes."""
    doc = yaml.safe_load(operator["robot"].read_text())
    doc["fleet"].update(blob_grace_s=1, min_rate_kib_s=10000)
    robot = operator["robot"].with_name("slow.yaml")
    robot.write_text(yaml.safe_dump(doc))
    with trickling_registry() as slow:
        started = time.monotonic()
        done = cli("--config", str(robot), "pull", "--repository", slow, timeout=60)
        took = time.monotonic() - started
    assert done.returncode == 69 and took < 15, (took, done.stderr)
    assert "too slow" in one_error_line(done)




@pytest.fixture
def stalled(tmp_path) -> Iterator[dict[str, object]]:
    made = {n: make_keys(tmp_path / "keys", n).private_file for n in ("root", "targets", "online")}
    with stalling_registry() as (repository, held):
        yield {"keys": made, "repository": repository, "held": held, "meta": tmp_path / "meta"}


def test_sigterm_ends_an_init_stuck_uploading_within_2_s_leaving_the_folder_whole(stalled):
    keys, meta = stalled["keys"], stalled["meta"]
    stderr = sigterm_when_held(stalled["held"], "fleet", "trust", "init", str(meta),
                               "--repository", stalled["repository"], "--root-key", str(keys["root"]),
                               "--targets-key", str(keys["targets"]),
                               "--online-key", str(keys["online"]), "--insecure")
    assert f"fleet trust push {meta}" in stderr  # how to finish the upload
    assert sorted(p.name for p in meta.iterdir()) == ["1.root.json", "1.snapshot.json",
                                                      "1.targets.json", "timestamp.json"]
    assert Repo.load(meta).repository == stalled["repository"]


def test_sigterm_ends_a_release_stuck_reading_the_bundle_within_2_s_changing_nothing(stalled):
    keys, meta = stalled["keys"], stalled["meta"]
    root, targets, online = load_key_files([keys["root"], keys["targets"], keys["online"]])
    repo = Repo(meta)
    repo.init(stalled["repository"], [root], 1, targets, online, timestamp_days=None)
    repo.save()
    before = {p.name: p.read_bytes() for p in meta.iterdir()}
    sigterm_when_held(stalled["held"], "fleet", "trust", "release", str(meta), "sku-x",
                      "--key", str(keys["targets"]), "--key", str(keys["online"]), "--insecure")
    assert {p.name: p.read_bytes() for p in meta.iterdir()} == before


def test_without_the_tuf_packages_the_trust_commands_say_what_to_install(tmp_path):
    probe = ("import sys; sys.modules['tuf'] = None  # as if not installed\n"
             "from app.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    out = subprocess.run([sys.executable, "-c", probe, "fleet", "trust", "timestamp", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert out.returncode == 78, out.stderr
    assert "needs the tuf and securesystemslib packages" in one_error_line(out)
    # Reading how to use a command needs no package: the check runs with the command.
    for args in (["fleet", "trust", "--help"], ["fleet", "trust", "init", "--help"]):
        helped = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                                text=True, cwd=REPO, env=env, timeout=60)
        assert helped.returncode == 0 and "Usage: " in helped.stdout, helped.stderr


@pytest.fixture
def fleet_meta(tmp_path, registry):
    """A fleet's metadata folder, initialised and pushed (one key per role, made in-process);
    ``(folder, {role: Keys})``."""
    from tests.fleet.helpers import make_keys

    keys = {name: make_keys(tmp_path / "keys", name) for name in ("root", "targets", "online")}
    meta = tmp_path / "meta"
    init = cli("fleet", "trust", "init", str(meta), "--repository", registry.repository(),
               "--root-key", str(keys["root"].private_file), "--targets-key",
               str(keys["targets"].private_file), "--online-key", str(keys["online"].private_file),
               "--insecure")
    assert init.returncode == 0, init.stderr
    return meta, keys


@pytest.fixture
def fresh_robot(tmp_path, corpus, registry, fleet_meta):
    """A robot provisioned with the fleet's 1.root.json whose cache folder does not exist yet."""
    meta, repo = fleet_meta[0], registry.repository()
    robot = write_job_config(tmp_path / "robot" / "not" / "yet", corpus, fleet={
        "trusted_root_file": str(meta / "1.root.json"), "repository": repo, "insecure": True})
    assert not (robot.parent / "cache").exists()
    return robot


def test_a_pull_under_tuf_creates_the_cache_folder_of_a_fresh_robot(fresh_robot):
    pulled = cli("--config", str(fresh_robot), "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert "no release for" in pulled.stdout
    assert (fresh_robot.parent / "cache" / "candidates" / "tuf" / "timestamp.json").is_file()


def test_a_mistyped_or_refused_repository_under_tuf_says_what_happened(fresh_robot, registry):
    (fresh_robot.parent / "cache").mkdir()
    typo = cli("--config", str(fresh_robot), "pull", "--repository", registry.repository("fleet/engnes"))
    assert typo.returncode == 69
    line = one_error_line(typo)
    assert "has no tuf-timestamp.json" in line and "for a typo" in line
    assert "--insecure" not in line  # loopback is plain HTTP already
    refused = cli("--config", str(fresh_robot), "pull", "--repository", "127.0.0.1:9/fleet/engines")
    assert refused.returncode == 69
    line = one_error_line(refused)
    assert "refused the connection" in line and "did not answer" not in line
    assert "--insecure" not in line


def test_release_of_a_sku_without_a_bundle_or_an_unknown_digest_is_one_line_65(
        tmp_path, registry, fleet_meta):
    from tests.fleet.helpers import AGX, cache_files
    from tests.fleet.test_registry import push_files

    meta, keys = fleet_meta
    signing = ["--key", str(keys["targets"].private_file), "--key", str(keys["online"].private_file)]
    files = cache_files(tmp_path / "c")
    pushed, _ = push_files(registry, files, AGX, keys["targets"])
    sku = AGX.sku_key()
    typo = cli("fleet", "trust", "release", str(meta), sku + "x", *signing, "--insecure")
    assert typo.returncode == 65
    line = one_error_line(typo)
    assert f"holds no bundle for {sku}x" in line and "engine-init status" in line
    unknown = cli("fleet", "trust", "release", str(meta), sku, "--digest", "sha256:" + "0" * 64,
                  *signing, "--insecure")
    assert unknown.returncode == 65
    line = one_error_line(unknown)
    assert f"holds no bundle sha256:{'0' * 64}" in line and "MANIFEST_UNKNOWN" not in line
    malformed = cli("fleet", "trust", "release", str(meta), sku, "--digest", pushed.replace(
        "fleet/engines", "fleet/other"), *signing, "--insecure")
    assert malformed.returncode == 78 and "not " + pushed.rsplit("@", 1)[0] in one_error_line(malformed)
    # The whole reference push printed is taken as it is.
    released = cli("fleet", "trust", "release", str(meta), sku, "--digest", pushed, *signing,
                   "--insecure")
    assert released.returncode == 0, released.stderr
    assert f"released {sku}@{pushed.rsplit('@', 1)[1]}: {len(files)} file(s)" in released.stdout


@pytest.mark.parametrize(("given", "why"), [
    ("deadbeef", "is not a digest"), ("sha256:" + "A" * 64, "is not a digest"),
    ("sha256:" + "0" * 63, "is not a digest"),
    ("reg:5000/fleet/engines@sha512:" + "0" * 64, "is not a digest"),
    ("reg:5000/other/engines:sm87@sha256:" + "0" * 64, "names reg:5000/other/engines:sm87"),
    ("reg:5000/fleet/engines:sm72@sha256:" + "0" * 64, "names reg:5000/fleet/engines:sm72")])
def test_release_digest_formats_other_than_push_printed_are_config_errors(given, why):
    from app.errors import ConfigError
    from app.fleet.tuf_client import released_digest

    with pytest.raises(ConfigError, match=why) as caught:
        released_digest(given, "reg:5000/fleet/engines", "sm87")
    assert "sha256:<64" in caught.value.hint
    assert released_digest("sha256:" + "a" * 64, "r:1/x", "s") == "sha256:" + "a" * 64
    assert released_digest(f"r:1/x:s@sha256:{'a' * 64}", "r:1/x", "s") == "sha256:" + "a" * 64


def test_trust_init_for_a_repository_name_outside_the_oci_grammar_writes_nothing(tmp_path, registry):
    from tests.fleet.helpers import make_keys

    key = make_keys(tmp_path / "keys", "one").private_file
    meta = tmp_path / "meta"
    init = cli("fleet", "trust", "init", str(meta), "--repository", registry.repository("Fleet/Engines"),
               "--root-key", str(key), "--targets-key", str(key), "--online-key", str(key))
    assert init.returncode == 78
    assert "'Fleet/Engines' is not a registry repository name" in one_error_line(init)
    assert not meta.exists()
