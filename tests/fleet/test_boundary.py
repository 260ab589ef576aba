"""The boundary between the candidates folder, which ``pull`` and ``import`` (facing the
network) write, and the cache, which only ``run`` writes: the attacks of a compromised puller,
against real files, real links and real runs (ONNX Runtime backend, this machine's SKU).

1. a candidate rewritten in place (same size, other bytes, mtime set back) while it is
   promoted: what is published is only ever the bytes hashed;
2. a candidate hard-linked from outside: the cache gets a file of its own, which the outside
   name cannot change;
3. ``candidates/``, ``candidates/<sku>/`` or ``files/`` as a link: never followed.

And the cache side: with ``trust_untracked_engines: false`` an engine, sidecar and edited
record planted in the cache root are rebuilt; what this robot built or promoted is reused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.cache.hashing import sidecar_path
from app.cache.record import read_record, record_path
from app.cache.signing import ROBOT_KEY_NAME, robot_key
from tests.fleet.helpers import make_robot
from tests.helpers import REPO, cli, json_events

pytestmark = pytest.mark.slow  # each runs the job two or three times

# `engine-init run` whose promotion copy (made ahead, app.fleet.promote.EarlyCopies, or by promote itself)
# is wrapped: the candidate it reads is rewritten in place through another descriptor (same
# size, first byte flipped, mtime set back) just before the copy starts ("before") or just
# after it ended ("after"), the instants a real attacker can only race for.
REWRITE = """
import os, sys
import app.cache.hashing as hashing
import app.fleet.promote as promote

real = hashing.copy_hashed

def rewrite(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    st = os.stat(path)
    with open(path, "r+b") as handle:
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

def copy_hashed(source, out=None, limit=None):
    if sys.argv[1] == "before":
        rewrite(source)
        return real(source, out, limit)
    got = real(source, out, limit)
    rewrite(source)
    return got

promote.copy_hashed = copy_hashed
from app.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run_rewriting(when: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    return subprocess.run([sys.executable, "-c", REWRITE, when, "--config", str(config), "run"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _files(tmp_path: Path) -> Path:
    [folder] = (tmp_path / "robot" / "cache" / "candidates").glob("*/files")
    return folder


def _engines(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "robot" / "cache").glob("*.ort"))


def _rejections(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [e["kv"]["reason"] for e in json_events(result.stderr)
            if e["kind"] == "c10.engine.candidate.rejected"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_attack_1_a_candidate_rewritten_before_its_copy_is_rejected(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference)
    ran = _run_rewriting("before", config)
    assert ran.returncode == 0, ran.stderr
    assert "ready: 3 built, 0 reused, 0 promoted" in ran.stdout
    assert _rejections(ran) == ["its bytes are not the ones the signed manifest lists"] * 3
    for engine in _engines(tmp_path):  # built here: neither the rewritten nor the signed bytes
        assert engine.read_bytes() != (_files(tmp_path) / engine.name).read_bytes()
        assert (sidecar_path(engine).read_text().split()[0], engine.stat().st_nlink) == (_sha(engine), 1)


def test_attack_1_a_candidate_rewritten_after_its_copy_changes_nothing_published(tmp_path, corpus,
                                                                                  reference):
    config = make_robot(tmp_path, corpus, reference)
    ran = _run_rewriting("after", config)
    assert ran.returncode == 0, ran.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    marker = json.loads((tmp_path / "robot" / "run" / "ready.json").read_text())
    for engine in _engines(tmp_path):
        signed = (reference.cache / engine.name).read_bytes()
        assert engine.read_bytes() == signed != (_files(tmp_path) / engine.name).read_bytes()
        digest = hashlib.sha256(signed).hexdigest()
        assert sidecar_path(engine).read_text().split()[0] == digest
        assert {e["sha256"] for e in marker["engines"] if e["engine_path"].endswith(engine.name)} == {digest}
    again = cli("--config", str(config), "run")
    assert "ready: 0 built, 3 reused, 0 promoted" in again.stdout, again.stderr


def test_attack_2_a_candidate_hard_linked_from_outside_is_copied_not_shared(tmp_path, corpus,
                                                                             reference):
    config = make_robot(tmp_path, corpus, reference)
    outside = tmp_path / "outside"
    outside.mkdir()
    for candidate in _files(tmp_path).glob("*.ort"):
        os.link(candidate, outside / candidate.name)  # nlink 2: the outside name writes it too
    ran = cli("--config", str(config), "run")
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout, ran.stderr
    for engine in _engines(tmp_path):
        theirs = outside / engine.name
        assert engine.stat().st_ino != theirs.stat().st_ino and engine.stat().st_nlink == 1
        with theirs.open("r+b") as handle:  # the outside name changes "the engine" afterwards
            handle.write(b"\0" * 64)
        assert engine.read_bytes() == (reference.cache / engine.name).read_bytes()
    again = cli("--config", str(config), "run")
    assert "ready: 0 built, 3 reused, 0 promoted" in again.stdout, again.stderr


@pytest.mark.parametrize("linked", ["candidates", "sku", "files"])
def test_attack_3_a_folder_of_the_candidates_as_a_link_is_never_followed(tmp_path, corpus,
                                                                          reference, linked):
    config = make_robot(tmp_path, corpus, reference)
    files = _files(tmp_path)
    folder = {"candidates": files.parent.parent, "sku": files.parent, "files": files}[linked]
    elsewhere = tmp_path / "elsewhere" / folder.name
    elsewhere.parent.mkdir()
    shutil.move(str(folder), str(elsewhere))
    folder.symlink_to(elsewhere, target_is_directory=True)
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 3 built, 0 reused, 0 promoted" in ran.stdout
    reasons = _rejections(ran)
    assert reasons == [f"unreadable: {folder}: not a folder where one is needed (links are not "
                       "followed)"] * 3
    inodes = {p.stat().st_ino for p in elsewhere.rglob("*.ort")}
    assert inodes and not inodes & {e.stat().st_ino for e in _engines(tmp_path)}


def test_status_and_verify_refuse_a_candidate_reached_through_a_link(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference)
    files = _files(tmp_path)
    shutil.move(str(files), str(tmp_path / "elsewhere"))
    files.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    status = json.loads(cli("--config", str(config), "status", "--json").stdout)
    assert [r["promote"] for r in status["engines"]] == [None] * 3
    assert all("links are not followed" in r["candidate_rejected"] for r in status["engines"])
    assert cli("--config", str(config), "verify").returncode == 65


def _untrusting(config: Path) -> None:
    doc = yaml.safe_load(config.read_text())
    doc["trust_untracked_engines"] = False
    config.write_text(yaml.safe_dump(doc))


def test_without_trust_an_engine_planted_with_an_edited_record_is_rebuilt(tmp_path, corpus,
                                                                          reference):
    """The reference's engines, sidecars and records (valid, of this very SKU and these
    inputs) copied into a robot's cache root, each record edited: none is this robot's."""
    config = make_robot(tmp_path, corpus, reference, public_key=False)
    _untrusting(config)
    cache = tmp_path / "robot" / "cache"
    shutil.rmtree(cache / "candidates")
    for engine in sorted(reference.cache.glob("*.ort")):
        for path in (engine, sidecar_path(engine), record_path(engine)):
            shutil.copyfile(path, cache / path.name)
        doc = json.loads(record_path(engine).read_text())
        doc["origin"], doc["built_at"] = "built", "2026-01-01T00:00:00Z"
        record_path(cache / engine.name).write_text(json.dumps(doc))
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 3 built, 0 reused" in ran.stdout
    untracked = [e["kv"]["detail"] for e in json_events(ran.stderr)
                 if e["kind"] == "c10.engine.provenance.untracked"]
    assert untracked == ["its record was not written by this robot (not signed with its key)"] * 3
    key = robot_key(cache, create=False)
    assert key is not None and (cache / ROBOT_KEY_NAME).stat().st_mode & 0o777 == 0o600
    for engine in _engines(tmp_path):
        stored = read_record(engine, key)
        assert stored.signed and stored.record is not None and stored.record.origin == "built"
    again = cli("--config", str(config), "run")
    assert "ready: 0 built, 3 reused" in again.stdout, again.stderr


def test_without_trust_what_this_robot_promoted_is_reused(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference)
    _untrusting(config)
    ran = cli("--config", str(config), "run")
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout, ran.stderr
    key = robot_key(tmp_path / "robot" / "cache", create=False)
    for engine in _engines(tmp_path):
        stored = read_record(engine, key)
        assert stored.signed and stored.record is not None and stored.record.origin == "promoted"
    again = cli("--config", str(config), "run")
    assert "ready: 0 built, 3 reused, 0 promoted" in again.stdout, again.stderr
