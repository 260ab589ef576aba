"""Promotion in ``run``: candidates exported by a reference host and imported by a robot are
checked on the robot (signature, manifest, bytes, backend, accuracy gate) and published instead
of built. Real processes, the real ONNX Runtime backend, real signed bundles (both hosts are
this machine: one SKU). The timing-cache seeding runs TensorRTRuntime on the TensorRT stand-in
(FakeTensorRT), the only TensorRT here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cache.fsread import UnsafeFileError
from app.cache.hashing import sidecar_path
from app.cache.record import read_record, record_path
from app.fleet import layout
from app.fleet.fetch import fetch_bundle, open_bundle
from app.fleet.promote import EarlyCopies
from tests.fleet.helpers import AGX, Reference, cache_files, export, make_robot
from tests.helpers import REPO, cli, json_events, write_job_config


def tampered_bundle(tmp_path: Path, corpus, ref: Reference, model: str, payload: bytes) -> Path:  # type: ignore[no-untyped-def]
    """A bundle, signed with the fleet's key, of the reference cache with ``model``'s engine
    replaced by ``payload`` (sidecar and record made to agree): what a faulty reference host
    would push."""
    root = tmp_path / "tampered"
    shutil.copytree(ref.cache, root / "cache")
    config = write_job_config(root, corpus)
    [engine] = (root / "cache").glob(f"{model}__*.ort")
    digest = hashlib.sha256(payload).hexdigest()
    engine.write_bytes(payload)
    sidecar_path(engine).write_text(digest + "\n")
    doc = json.loads(record_path(engine).read_text())
    doc.update(engine_sha256=digest, engine_size=len(payload))
    record_path(engine).write_text(json.dumps(doc))
    bundle = tmp_path / "tampered.tar"
    exported = cli("--config", str(config), "export", str(bundle), "--private-key", str(ref.private))
    assert exported.returncode == 0, exported.stderr
    return bundle


def candidates(tmp_path: Path) -> Path:
    [folder] = [p for p in (tmp_path / "robot" / "cache" / "candidates").iterdir() if p.is_dir()]
    return folder


def _kinds(result, kind):  # type: ignore[no-untyped-def]
    return [e["kv"] for e in json_events(result.stderr) if e["kind"] == kind]


def test_a_robot_with_candidates_builds_nothing_and_promotes_all(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference)
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.candidate.promoted")] == [
        "dinov2_vpr", "lightglue", "aliked"]
    assert _kinds(ran, "c10.engine.compile.start") == []
    # Each miss is worded by what follows it: the candidate is checked, nothing is built.
    assert [e["msg"] for e in json_events(ran.stderr) if e["kind"] == "c10.engine.cache.miss"] == [
        f"{n}: no reusable engine (absent); a fleet candidate is checked"
        for n in ("dinov2_vpr", "lightglue", "aliked")]
    [summary] = _kinds(ran, "c10.engine.compile.summary")
    assert (summary["engines_built"], summary["engines_promoted"]) == (0, 3)
    marker = json.loads((tmp_path / "robot" / "run" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["promoted"] * 3
    files = candidates(tmp_path) / "files"
    for engine in marker["engines"]:
        name = engine["engine_path"].rsplit("/", 1)[1]
        assert (reference.cache / name).read_bytes() == (tmp_path / "robot" / "cache" / name).read_bytes()
        # A copy of the verified bytes, of one name, that only the job wrote.
        published = (tmp_path / "robot" / "cache" / name).stat()
        assert published.st_ino != (files / name).stat().st_ino and published.st_nlink == 1
        record = read_record(tmp_path / "robot" / "cache" / name).record
        assert record is not None and record.status == "built" and record.sku
        assert record.accuracy is None  # verify: io here, the gate did not run
    again = cli("--config", str(config), "run")
    assert again.returncode == 0 and "ready: 0 built, 3 reused, 0 promoted" in again.stdout


def test_a_candidate_whose_onnx_changed_is_rejected_and_built_here(tmp_path, corpus, reference):
    import onnx

    config = make_robot(tmp_path, corpus, reference)
    onnx_path = tmp_path / "models" / corpus["lightglue"].name
    model = onnx.load(str(onnx_path))
    model.doc_string = "retrained"  # other bytes, same graph: the candidate is stale
    onnx.save(model, str(onnx_path))
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in ran.stdout
    [rejected] = _kinds(ran, "c10.engine.candidate.rejected")
    assert rejected["model_name"] == "lightglue" and "onnx_sha256" in rejected["reason"]
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.built")] == ["lightglue"]


def test_a_signed_candidate_the_backend_cannot_load_is_rejected_and_built_here(tmp_path, corpus,
                                                                              reference):
    """Signature, manifest, bytes and record all agree, so only the backend's check refuses it."""
    junk = b"not an ORT model" * 100
    config = make_robot(tmp_path, corpus, reference,
                        tampered_bundle(tmp_path, corpus, reference, "aliked", junk))
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in ran.stdout
    [rejected] = _kinds(ran, "c10.engine.candidate.rejected")
    assert rejected["model_name"] == "aliked" and "does not load" in rejected["reason"]
    built = next((tmp_path / "robot" / "cache").glob("aliked__*.ort"))
    assert built.read_bytes() != junk


def test_the_candidate_is_checked_against_the_onnx_interface_its_record_holds(tmp_path, corpus,
                                                                               reference):
    """The reference's build recorded the ONNX model's inputs and outputs (``onnx_io``), tied
    to its ``onnx_sha256``: the robot checks the engine against them, with no import of
    ``onnx`` (-X importtime lists every module a process imports). A signed record whose
    ``onnx_io`` names another output makes that check refuse the candidate."""
    [record] = reference.cache.glob("aliked__*.ort.record.json")
    assert json.loads(record.read_text())["onnx_io"]["outputs"] == [["scores", "float32", [1, 1, 64, 64]]]
    config = make_robot(tmp_path, corpus, reference)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    ran = subprocess.run([sys.executable, "-X", "importtime", "-m", "app", "--config", str(config),
                          "run"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in ran.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported and not {m for m in imported if m.split(".")[0] == "onnx"}

    root = tmp_path / "renamed"
    shutil.copytree(reference.cache, root / "cache")
    [record] = (root / "cache").glob("aliked__*.ort.record.json")
    doc = json.loads(record.read_text())
    doc["onnx_io"]["outputs"][0][0] = "keypoints"
    record.write_text(json.dumps(doc))
    bundle = tmp_path / "renamed.tar"
    assert cli("--config", str(write_job_config(root, corpus)), "export", str(bundle),
               "--private-key", str(reference.private)).returncode == 0
    (tmp_path / "second").mkdir()
    other = make_robot(tmp_path / "second", corpus, reference, bundle)
    again = cli("--config", str(other), "run")
    assert again.returncode == 0, again.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in again.stdout
    [rejected] = _kinds(again, "c10.engine.candidate.rejected")
    assert rejected["model_name"] == "aliked" and "keypoints" in rejected["reason"]


def _all_rejected_and_built(config: Path, reason: str) -> None:
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 3 built, 0 reused, 0 promoted" in ran.stdout
    rejected = _kinds(ran, "c10.engine.candidate.rejected")
    assert [kv["model_name"] for kv in rejected] == ["dinov2_vpr", "lightglue", "aliked"]
    assert all(reason in kv["reason"] for kv in rejected), rejected
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.built")] == [
        "dinov2_vpr", "lightglue", "aliked"]


def test_candidates_re_signed_by_another_key_are_rejected_and_built_here(tmp_path, corpus,
                                                                        reference, other_keys):
    from app.fleet.bundle import key_id, sign_digest

    config = make_robot(tmp_path, corpus, reference)
    folder = candidates(tmp_path)
    signed = layout.parse_signed_index((folder / "index.json").read_bytes())
    forged = sign_digest(other_keys.private, signed.manifest.digest)
    (folder / "index.json").write_bytes(layout.signed_index(
        signed.manifest, forged, key_id(other_keys.public), signed.sku))
    _all_rejected_and_built(config, "does not verify with public key")


def test_without_a_public_key_configured_no_candidate_is_promoted(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference, public_key=False)
    _all_rejected_and_built(config, "fleet.public_key_file is not set")


def test_a_manifest_edited_after_import_is_rejected_and_built_here(tmp_path, corpus, reference):
    config = make_robot(tmp_path, corpus, reference)
    manifest = candidates(tmp_path) / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["annotations"]["note"] = "edited"
    manifest.write_text(json.dumps(doc))
    _all_rejected_and_built(config, "manifest.json is not the manifest its signature covers")


def test_a_candidate_failing_the_accuracy_gate_is_rejected_and_built_here(tmp_path, corpus,
                                                                         reference):
    """The candidate is a real ONNX Runtime build of another dinov2_vpr (other weights, the same
    inputs and outputs): it loads, but its outputs are not the model's."""
    from app.backends.onnxruntime import OnnxRuntimeBackend
    from app.values import BuildConfig, InputProfile, PrecisionMode
    from tools.demo import make_dinov2_vpr

    other = tmp_path / "other.ort"
    OnnxRuntimeBackend().compile_engine(make_dinov2_vpr(tmp_path / "other.onnx", seed=99), BuildConfig(
        precision=PrecisionMode.FP32, model_name="dinov2_vpr", engine_path=other,
        input_shapes={None: InputProfile.fixed((1, 3, 32, 32))}))
    bundle = tampered_bundle(tmp_path, corpus, reference, "dinov2_vpr", other.read_bytes())
    config = make_robot(tmp_path, corpus, reference, bundle, gate=True)
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 1 built, 0 reused, 2 promoted" in ran.stdout
    [rejected] = _kinds(ran, "c10.engine.candidate.rejected")
    [failed] = _kinds(ran, "c10.engine.accuracy.failed")
    assert rejected["model_name"] == "dinov2_vpr" and "the accuracy gate" in rejected["reason"]
    assert f"{failed['metric']} " in rejected["reason"] and f"{failed['threshold']:g}" in rejected["reason"]
    [passed] = _kinds(ran, "c10.engine.accuracy.passed")  # the local build's
    assert passed["model_name"] == "dinov2_vpr"
    assert [kv["model_name"] for kv in _kinds(ran, "c10.engine.built")] == ["dinov2_vpr"]
    engine = Path(rejected["candidate"]).name
    built = tmp_path / "robot" / "cache" / engine
    assert built.read_bytes() != other.read_bytes()
    record = read_record(built).record
    assert record is not None and record.accuracy is not None and record.accuracy["passed"]


def test_a_candidate_passing_the_accuracy_gate_is_promoted_with_its_figures(tmp_path, corpus,
                                                                           reference):
    config = make_robot(tmp_path, corpus, reference, gate=True)
    ran = cli("--config", str(config), "run")
    assert ran.returncode == 0, ran.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout
    [passed] = _kinds(ran, "c10.engine.accuracy.passed")
    [engine] = (tmp_path / "robot" / "cache").glob("dinov2_vpr__*.ort")
    record = read_record(engine).record
    assert record is not None and record.accuracy is not None
    assert record.accuracy["passed"] and record.accuracy["engine_sha256"] == record.engine_sha256
    assert record.accuracy["outputs"] == passed["outputs"]
    marker = json.loads((tmp_path / "robot" / "run" / "ready.json").read_text())
    assert marker["engines"][0]["accuracy"]["passed"]
    again = cli("--config", str(config), "run")  # the recorded pass vouches: no new check
    assert "ready: 0 built, 3 reused, 0 promoted" in again.stdout
    assert _kinds(again, "c10.engine.accuracy.passed") == []


def test_a_folder_is_checked_once_and_again_when_its_manifest_changes(tmp_path, keys, monkeypatch):
    from app.fleet import bundle as key_functions
    from app.fleet.candidates import trust_folder
    from app.fleet.fetch import fetch_bundle, open_bundle
    from tests.fleet.helpers import AGX, cache_files, export

    files = cache_files(tmp_path / "reference")
    (tmp_path / "robot").mkdir()
    with open_bundle(export(tmp_path / "bundle", files, AGX, keys)) as source:
        fetch_bundle(source, keys.public, AGX, tmp_path / "robot" / "candidates")
    checked = []
    verify = key_functions.verify_digest
    monkeypatch.setattr(key_functions, "verify_digest", lambda *a: checked.append(a) or verify(*a))
    sku = AGX.sku_key()
    folder = tmp_path / "robot" / "candidates" / sku
    first = trust_folder(folder, sku, keys.public_file)
    assert trust_folder(folder, sku, keys.public_file) is first and len(checked) == 1
    assert not first.reason and sorted(first.files) == sorted(files)
    with (folder / "manifest.json").open("ab") as manifest:
        manifest.write(b" ")  # still the same JSON, no longer the signed bytes
    again = trust_folder(folder, sku, keys.public_file)
    assert len(checked) == 2 and again.reason == "manifest.json is not the manifest its signature covers"


@pytest.mark.parametrize("case", ["absent", "kept", "unverified"])
def test_a_tensorrt_build_starts_from_the_bundles_timing_cache_standin(tmp_path, corpus, keys,
                                                                       events, case):
    """TensorRTRuntime on the TensorRT stand-in (FakeTensorRT). The bundle's timing cache of this
    TensorRT version and device is what the local build loads when there is none here (absent);
    a timing cache already here is kept (kept); a folder whose signature cannot be checked (no
    public key configured) seeds nothing (unverified)."""
    from app.compiler import EngineCompiler
    from app.config import BackboneSpec
    from app.fleet.fetch import fetch_bundle, open_bundle
    from app.values import CompileOutcome
    from tests.backends.tensorrt.fake_tensorrt import FakeTensorRT
    from tests.backends.tensorrt.helpers import runtime_for
    from tests.fleet.helpers import AGX, export
    from tests.helpers import make_request

    fake = FakeTensorRT("10.3.0")
    runtime = runtime_for(fake)
    robot = tmp_path / "robot"
    target = runtime.timing_cache_path(robot)
    assert target is not None
    theirs = b"TC1|" + fake.device_props.encode() + b"|[reference timings]"
    source_file = tmp_path / "reference" / "timing" / target.name
    source_file.parent.mkdir(parents=True)
    source_file.write_bytes(theirs)
    robot.mkdir()
    with open_bundle(export(tmp_path / "bundle", {f"timing/{target.name}": source_file}, AGX,
                            keys)) as source:
        fetch_bundle(source, keys.public, AGX, robot / "candidates")
    mine = b"TC1|" + fake.device_props.encode() + b"|[robot timings]"
    if case == "kept":
        target.parent.mkdir()
        target.write_bytes(mine)
    request = make_request((BackboneSpec("dinov2_vpr", corpus["dinov2_vpr"], (1, 3, 32, 32)),),
                           robot, host=runtime.host, fleet_candidates=robot / "candidates",
                           fleet_public_key=None if case == "unverified" else keys.public_file)
    [result] = EngineCompiler(runtime, events[0], identity=AGX).compile_engines_for_corpus(request)
    assert result.outcome is CompileOutcome.BUILT
    [loaded] = [call[1] for call in fake.calls if call[0] == "create_timing_cache"]
    seeded = events[1].kv("c10.engine.timing_cache.seeded")
    if case == "absent":
        assert loaded == theirs
        assert seeded == [{"path": str(target), "sku": AGX.sku_key(), "bytes": len(theirs)}]
    else:
        assert loaded == (mine if case == "kept" else b"") and seeded == []
    # The build saved its own timings on top of what it loaded.
    assert target.read_bytes().startswith(loaded or b"TC1|") and target.read_bytes() != loaded


# Copies of candidates made ahead of their promotion: real signed folders, real files, real
# threads; each copy is published or removed, and reads at most one byte past the signed size.

SKU = AGX.sku_key()


def _robot(tmp_path: Path, keys) -> tuple[Path, Path, list[Path]]:  # type: ignore[no-untyped-def]
    files = cache_files(tmp_path / "reference")
    candidates, cache = tmp_path / "robot" / "candidates", tmp_path / "robot" / "cache"
    cache.mkdir(parents=True)
    with open_bundle(export(tmp_path / "bundle", files, AGX, keys)) as source:
        fetch_bundle(source, keys.public, AGX, candidates)
    engines = sorted(cache / n for n in files if n.endswith(".engine"))
    return candidates, cache, engines


def test_published_copies_are_the_signed_bytes_and_abandoned_ones_leave_nothing(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    copies = EarlyCopies(candidates, SKU, keys.public_file, engines)
    first, second = copies.take(engines[0]), copies.take(engines[1])
    assert first is not None and second is not None and copies.take(engines[0]) is None
    first.wait_copied()
    first.publish()
    signed = (candidates / SKU / "files" / engines[0].name).read_bytes()
    assert engines[0].read_bytes() == signed and first.digest == hashlib.sha256(signed).hexdigest()
    assert engines[0].stat().st_nlink == 1
    second.wait_copied()
    second.abandon()
    second._done.wait(5)
    assert sorted(os.listdir(cache)) == [engines[0].name]  # no temp file, nothing else


def test_a_candidate_grown_past_its_signed_size_is_read_one_byte_past_it(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    target = candidates / SKU / "files" / engines[0].name
    signed = target.stat().st_size
    with target.open("ab") as handle:  # 1 GiB more, as holes: never read past signed + 1
        handle.truncate(signed + (1 << 30))
    copies = EarlyCopies(candidates, SKU, keys.public_file, engines[:1])
    staged = copies.take(engines[0])
    assert staged is not None
    staged.wait_copied()
    assert staged.size == signed + 1 and staged.error is None
    copies.abandon()
    staged.abandon()
    staged._done.wait(5)
    assert os.listdir(cache) == []


def test_no_copy_is_made_from_a_folder_whose_signature_cannot_be_checked(tmp_path, keys):
    candidates, cache, engines = _robot(tmp_path, keys)
    copies = EarlyCopies(candidates, SKU, None, engines)
    assert [copies.take(e) for e in engines] == [None, None]
    assert os.listdir(cache) == []


@pytest.mark.parametrize("planted", ["fifo", "link", "link-to-device"])
def test_a_candidate_that_is_not_a_regular_file_is_never_opened_through(tmp_path, keys, planted):
    candidates, cache, engines = _robot(tmp_path, keys)
    target = candidates / SKU / "files" / engines[0].name
    kept = tmp_path / "kept"
    target.rename(kept)
    {"fifo": lambda: os.mkfifo(target), "link": lambda: target.symlink_to(kept),
     "link-to-device": lambda: target.symlink_to("/dev/zero")}[planted]()
    staged = EarlyCopies(candidates, SKU, keys.public_file, engines[:1]).take(engines[0])
    assert staged is not None
    staged.wait_copied()  # at once: a FIFO is opened without waiting for a writer
    assert isinstance(staged.error, UnsafeFileError), staged.error
    assert staged.error.filename == str(target)
    assert os.listdir(cache) == []
