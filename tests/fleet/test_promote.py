"""Promotion in ``run``: candidates exported by a reference host and imported by a robot are
checked on the robot and published instead of built. Real processes, the real ONNX Runtime
backend, real signed bundles (both hosts are this machine: one SKU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from app.cache.record import read_record
from tests.helpers import REPO, cli, json_events, write_job_config


@pytest.fixture
def robot(tmp_path, corpus):
    """A reference host that ran and exported its engines; a robot (its own copy of the models)
    that imported them. Returns (robot config, robot models folder)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    assert cli("fleet", "keygen", str(keys / "k.pem"), str(keys / "k.pub.pem")).returncode == 0
    reference = write_job_config(tmp_path / "reference", corpus)
    assert cli("--config", str(reference), "run").returncode == 0
    bundle = tmp_path / "bundle.tar"
    exported = cli("--config", str(reference), "export", str(bundle), "--private-key",
                   str(keys / "k.pem"))
    assert exported.returncode == 0, exported.stderr
    models = tmp_path / "models"
    models.mkdir()
    local = dict(corpus)
    for name in ("dinov2_vpr", "lightglue", "aliked"):
        local[name] = models / corpus[name].name
        shutil.copyfile(corpus[name], local[name])
    config = write_job_config(tmp_path / "robot", local)
    (tmp_path / "robot" / "cache").mkdir()
    imported = cli("--config", str(config), "import", str(bundle), "--public-key",
                   str(keys / "k.pub.pem"))
    assert imported.returncode == 0, imported.stderr
    return config, local


def _kinds(result, kind):  # type: ignore[no-untyped-def]
    return [e["kv"] for e in json_events(result.stderr) if e["kind"] == kind]


def test_a_robot_with_candidates_builds_nothing_and_promotes_all(tmp_path, robot):
    config, _ = robot
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.candidate.promoted")] == [
        "dinov2_vpr", "lightglue", "aliked"]
    assert _kinds(ran, "c10.engine.compile.start") == []
    [summary] = _kinds(ran, "c10.engine.compile.summary")
    assert (summary["engines_built"], summary["engines_promoted"]) == (0, 3)
    marker = json.loads((tmp_path / "robot" / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["promoted"] * 3
    reference = tmp_path / "reference" / "cache"
    [candidates] = (tmp_path / "robot" / "cache" / "candidates").glob("*/files")
    for engine in marker["engines"]:
        name = engine["engine_path"].rsplit("/", 1)[1]
        assert (reference / name).read_bytes() == (tmp_path / "robot" / "cache" / name).read_bytes()
        # The candidate file itself is the engine: a hard link, no byte written again.
        assert (candidates / name).stat().st_ino == (tmp_path / "robot" / "cache" / name).stat().st_ino
        record = read_record(tmp_path / "robot" / "cache" / name).record
        assert record is not None and record.status == "built" and record.sku
    again = cli("--config", str(config), "run")
    assert again.returncode == 0 and "ready: 0 built, 3 reused, 0 promoted" in again.stdout


def test_a_candidate_whose_onnx_changed_is_rejected_and_built_here(tmp_path, robot):
    import onnx

    config, local = robot
    model = onnx.load(str(local["lightglue"]))
    model.doc_string = "retrained"  # other bytes, same graph: the candidate is stale
    onnx.save(model, str(local["lightglue"]))
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in ran.stdout
    [rejected] = _kinds(ran, "c10.engine.candidate.rejected")
    assert rejected["model_name"] == "lightglue" and "onnx_sha256" in rejected["reason"]
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.built")] == ["lightglue"]


def test_a_candidate_the_backend_cannot_load_is_rejected_and_built_here(tmp_path, robot):
    """Bytes, sidecar and record agree, so only the backend's own check can refuse it."""
    import hashlib

    from app.cache.record import record_path
    from app.cache.sidecar import sidecar_path

    config, _ = robot
    [candidate] = (tmp_path / "robot" / "cache" / "candidates").glob("*/files/aliked__*.ort")
    junk = b"not an ORT model" * 100
    digest = hashlib.sha256(junk).hexdigest()
    candidate.write_bytes(junk)
    sidecar_path(candidate).write_text(digest + "\n")
    doc = json.loads(record_path(candidate).read_text())
    doc.update(engine_sha256=digest, engine_size=len(junk))
    record_path(candidate).write_text(json.dumps(doc))
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in ran.stdout
    [rejected] = _kinds(ran, "c10.engine.candidate.rejected")
    assert rejected["model_name"] == "aliked" and "does not load" in rejected["reason"]
    built = next((tmp_path / "robot" / "cache").glob("aliked__*.ort"))
    assert built.read_bytes() != junk


# `engine-init` with os.link made to fail as across file systems, or to change the candidate
# just before it is linked (a fault no real run can be made to show at that instant).
LINK = """
import errno, os, sys
real_link = os.link

def link(source, target, **kwargs):
    if sys.argv[1] == "cross-device":
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), source)
    with open(source, "r+b") as handle:  # same size, other bytes, a new mtime
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
    return real_link(source, target, **kwargs)

os.link = link
from app.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run_with_link(fault, config):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    return subprocess.run([sys.executable, "-c", LINK, fault, "--config", str(config), "run"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_where_no_hard_link_can_be_made_the_candidate_is_copied(tmp_path, robot):
    config, _ = robot
    ran = _run_with_link("cross-device", config)
    assert ran.returncode == 0, ran.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    [candidates] = (tmp_path / "robot" / "cache" / "candidates").glob("*/files")
    for engine in (tmp_path / "robot" / "cache").glob("*.ort"):
        assert engine.read_bytes() == (candidates / engine.name).read_bytes()
        assert engine.stat().st_ino != (candidates / engine.name).stat().st_ino
    assert cli("--config", str(config), "run").stdout.startswith("ready: 0 built, 3 reused")


def test_a_candidate_that_changes_while_it_is_checked_is_not_published(tmp_path, robot):
    config, _ = robot
    ran = _run_with_link("changes", config)
    assert ran.returncode == 0, ran.stderr
    assert "ready: 3 built, 0 reused, 0 promoted" in ran.stdout
    rejected = _kinds(ran, "c10.engine.candidate.rejected")
    assert [kv["reason"] for kv in rejected] == ["it changed while it was checked"] * 3
    [candidates] = (tmp_path / "robot" / "cache" / "candidates").glob("*/files")
    for engine in (tmp_path / "robot" / "cache").glob("*.ort"):  # built here, not the candidate
        assert engine.stat().st_ino != (candidates / engine.name).stat().st_ino
        assert engine.read_bytes() != (candidates / engine.name).read_bytes()
