"""The hardware identity in the provenance record and the reuse decision, and
``trust_untracked_engines``. The runtime is the stand-in FakeRuntime (as in test_compiler.py);
the identities are those of real Orin modules (tests/host/test_identity.py), since no Jetson runs
here. The CLI test runs the real ONNX Runtime backend."""

from __future__ import annotations

import json
import logging

from app import CompileOutcome, EngineCompiler
from app.cache.record import read_record, record_path
from app.host.identity import HardwareIdentity
from tests.helpers import EventLog, FakeRuntime, cli, json_events, make_request, orin, write_job_config

Events = tuple[logging.Logger, EventLog]
#: An Orin NX 16 GB: same compute capability and device name as the AGX Orin, another SKU.
ORIN_NX = orin(sm_count=8, total_memory=16_480_000_000,
               board=("nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"),
               board_model="NVIDIA Orin NX Developer Kit")


def _compile(events: Events, request, identity: HardwareIdentity | None = None,  # type: ignore[no-untyped-def]
             trust: bool = True, runtime: FakeRuntime | None = None, key: bytes | None = None):
    compiler = EngineCompiler(runtime or FakeRuntime(), events[0], identity=identity,
                              trust_untracked=trust, signing_key=key)
    return compiler.compile_engines_for_corpus(request)


def _strip_identity(engine) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a record as engine-init wrote it before records carried the identity."""
    doc = json.loads(record_path(engine).read_text())
    del doc["sku"], doc["hardware"]
    record_path(engine).write_text(json.dumps(doc))


def test_the_record_carries_the_sku_facts_and_the_whole_identity(specs, tmp_path, events):
    results = _compile(events, make_request(specs, tmp_path), orin())
    record = read_record(results[0].entry.engine_path).record
    assert record is not None
    assert record.sku == {"backend": "tensorrt", "backend_version": "10.3.0.30",
                          "machine": "aarch64", "compute_capability": "8.7", "sm_count": 16,
                          "memory_class_gib": 64, "board_module": "p3701-0005",
                          "jetpack": "6.2", "l4t": "36.4.3"}
    assert record.hardware["cuda_driver"] == 12060
    assert record.hardware["sku_key"] == orin().sku_key()


def test_an_engine_of_another_sku_is_rebuilt_naming_what_differs(specs, tmp_path, events):
    _compile(events, make_request(specs, tmp_path), orin())
    events[1].records.clear()
    runtime = FakeRuntime()
    results = _compile(events, make_request(specs, tmp_path), ORIN_NX, runtime=runtime)
    assert len(runtime.calls) == 3
    assert [r.outcome for r in results] == [CompileOutcome.BUILT] * 3
    mismatches = events[1].kv("c10.engine.provenance.mismatch")
    assert len(mismatches) == 3
    for kv in mismatches:
        assert kv["changed"] == ["sku.board_module", "sku.memory_class_gib", "sku.sm_count"]
        assert "sm_count: record 16, this host 8" in kv["detail"]
    record = read_record(results[0].entry.engine_path).record
    assert record is not None and record.sku["sm_count"] == 8


def test_a_driver_or_carrier_board_change_alone_reuses(specs, tmp_path, events):
    _compile(events, make_request(specs, tmp_path), orin())
    runtime = FakeRuntime()
    other = orin(cuda_driver=12080, board=("nvidia,p3740-0002+p3701-0005", "nvidia,p3701-0005"),
                 board_model="a custom carrier")
    results = _compile(events, make_request(specs, tmp_path), other, runtime=runtime)
    assert runtime.calls == []
    assert [r.outcome for r in results] == [CompileOutcome.REUSED] * 3


def test_a_record_from_before_the_identity_is_reused_as_untracked_and_recorded(specs, tmp_path,
                                                                                 events):
    results = _compile(events, make_request(specs, tmp_path), orin())
    engine = results[0].entry.engine_path
    _strip_identity(engine)
    events[1].records.clear()
    runtime = FakeRuntime()
    _compile(events, make_request(specs, tmp_path), orin(), runtime=runtime)
    assert runtime.calls == []
    [warning] = events[1].kv("c10.engine.provenance.untracked")
    assert warning["detail"] == "its record predates the hardware identity"
    record = read_record(engine).record
    assert record is not None and record.sku["sm_count"] == 16


def test_without_trust_only_records_this_robot_signed_are_reused(specs, tmp_path, events):
    """trust_untracked off: the job signs records with this robot's key (app.cache.signing
    .robot_key); a record edited since (here: its identity taken out), a missing one, or one
    that no key signed is not this robot's and rebuilds."""
    key = b"k" * 32
    results = _compile(events, make_request(specs, tmp_path), orin(), key=key)
    _strip_identity(results[0].entry.engine_path)
    record_path(results[1].entry.engine_path).unlink()
    events[1].records.clear()
    runtime = FakeRuntime()
    _compile(events, make_request(specs, tmp_path), orin(), trust=False, runtime=runtime, key=key)
    assert runtime.built == ["dinov2_vpr", "lightglue"]  # aliked's record is this robot's
    warnings = events[1].of("c10.engine.provenance.untracked")
    assert [w.levelno for w in warnings] == [logging.WARNING] * 2
    assert [kv["detail"] for kv in events[1].kv("c10.engine.provenance.untracked")] == [
        "its record was not written by this robot (not signed with its key)", "no provenance record"]
    for result in results[:2]:
        record = read_record(result.entry.engine_path, key).record
        assert record is not None and record.sku["sm_count"] == 16 and record.origin == "built"
    events[1].records.clear()
    unsigned = _compile(events, make_request(specs, tmp_path), orin(), trust=False)
    assert [r.outcome for r in unsigned] == [CompileOutcome.BUILT] * 3  # no key: nothing is


def test_trust_untracked_engines_false_rebuilds_a_preinstalled_engine_cli(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus, trust_untracked_engines=False)
    assert cli("--config", str(job), "run").returncode == 0
    engine = next((tmp_path / "cache").glob("dinov2_vpr__*.ort"))
    record_path(engine).unlink()  # as an engine baked into an image
    again = cli("--config", str(job), "run")
    assert again.returncode == 0, again.stderr
    assert "1 built, 2 reused" in again.stdout
    [warning] = [e for e in json_events(again.stderr)
                 if e["kind"] == "c10.engine.provenance.untracked"]
    assert warning["kv"]["detail"] == "no provenance record"
    record = read_record(engine).record
    assert record is not None and record.sku["backend"] == "onnxruntime"


def test_records_written_by_the_job_carry_this_hosts_identity_cli(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    assert cli("--config", str(job), "run").returncode == 0
    engine = next((tmp_path / "cache").glob("aliked__*.ort"))
    record = read_record(engine).record
    assert record is not None and record.hardware["sku_key"].endswith("-onnxruntime")
