"""The fleet commands through real processes: a reference host runs and exports or pushes; a
fresh robot cache imports or pulls. Both are this machine (ONNX Runtime backend, its SKU key)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fleet.helpers import leftovers, one_error_line, sigterm_when_held, stalling_registry
from tests.helpers import REPO, cli, json_events, write_job_config


@pytest.fixture
def fleet(tmp_path, corpus):
    """Keys made by `fleet keygen`, a reference host whose run built every engine, a robot."""
    keys = tmp_path / "keys"
    keys.mkdir()
    made = cli("fleet", "keygen", str(keys / "fleet.pem"), str(keys / "fleet.pub.pem"))
    assert made.returncode == 0, made.stderr
    cli("fleet", "keygen", str(keys / "other.pem"), str(keys / "other.pub.pem"))
    reference = write_job_config(tmp_path / "reference", corpus)
    robot = write_job_config(tmp_path / "robot", corpus,
                             fleet={"public_key_file": str(keys / "fleet.pub.pem")})
    (tmp_path / "robot" / "cache").mkdir()
    ran = cli("--config", str(reference), "run")
    assert ran.returncode == 0, ran.stderr
    sku = json.loads(cli("--config", str(reference), "status", "--json").stdout)["sku"]
    return {"keys": keys, "reference": reference, "robot": robot, "sku": sku,
            "ref_cache": tmp_path / "reference" / "cache", "robot_cache": tmp_path / "robot" / "cache"}


def engines_of(cache):
    """The engines a run published, with their sidecars and records (not hints, not locks)."""
    return {p.name: p.read_bytes() for p in cache.iterdir()
            if p.is_file() and not p.name.startswith(".")}


def stored(f):
    folder = f["robot_cache"] / "candidates" / f["sku"] / "files"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


@pytest.mark.parametrize("name", ["bundle", "bundle.tar"])
def test_export_then_import(tmp_path, fleet, name):
    f = fleet
    bundle = tmp_path / name
    out = cli("--config", str(f["reference"]), "export", str(bundle),
              "--private-key", str(f["keys"] / "fleet.pem"))
    assert out.returncode == 0, out.stderr
    assert f"exported {f['sku']}: 9 file(s)" in out.stdout
    [event] = [e["kv"] for e in json_events(out.stderr) if e["kind"] == "c10.fleet.exported"]
    assert event["sku"] == f["sku"]
    wrong = cli("--config", str(f["robot"]), "import", str(bundle),
                "--public-key", str(f["keys"] / "other.pub.pem"))
    assert wrong.returncode == 65 and "signature does not verify" in one_error_line(wrong)
    assert leftovers(f["robot_cache"]) == []
    good = cli("--config", str(f["robot"]), "import", str(bundle),
               "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert good.returncode == 0, good.stderr
    assert stored(f) == engines_of(f["ref_cache"])
    kinds = [e["kind"] for e in json_events(good.stderr)]
    assert "c10.fleet.candidates.stored" in kinds
    # The robot's own cache is untouched: candidates are not engines a run reuses.
    assert engines_of(f["robot_cache"]) == {}


def test_export_refuses_without_ready_engines_or_with_a_bad_key(tmp_path, fleet):
    f = fleet
    not_run = cli("--config", str(f["robot"]), "export", str(tmp_path / "b"),
                  "--private-key", str(f["keys"] / "fleet.pem"))
    assert not_run.returncode == 65 and "engines not ready" in one_error_line(not_run)
    bad_key = cli("--config", str(f["reference"]), "export", str(tmp_path / "b"),
                  "--private-key", str(f["keys"] / "fleet.pub.pem"))
    assert bad_key.returncode == 78 and "fleet.pub.pem is not a PEM private key" in one_error_line(bad_key)
    assert not (tmp_path / "b").exists()


def test_push_then_pull(fleet, registry):
    f = fleet
    repo = registry.repository()
    pushed = cli("--config", str(f["reference"]), "push", "--repository", repo, "--insecure",
                 "--private-key", str(f["keys"] / "fleet.pem"))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().startswith(f"{repo}:{f['sku']}@sha256:")
    [event] = [e["kv"] for e in json_events(pushed.stderr) if e["kind"] == "c10.fleet.pushed"]
    assert event["sku"] == f["sku"] and event["reference"] == pushed.stdout.strip()
    pulled = cli("--config", str(f["robot"]), "pull", "--repository", repo, "--insecure",
                 "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert pulled.returncode == 0, pulled.stderr
    assert stored(f) == engines_of(f["ref_cache"])
    # The robot boots ready with no build of its own: every engine is the pulled candidate,
    # checked on this host and promoted.
    booted = cli("--config", str(f["robot"]), "run")
    assert booted.returncode == 0, booted.stderr
    assert "ready: 0 built, 0 reused, 3 promoted" in booted.stdout
    def engines_and_sidecars(cache):  # type: ignore[no-untyped-def]
        return {k: v for k, v in engines_of(cache).items() if not k.endswith(".record.json")}

    assert engines_and_sidecars(f["robot_cache"]) == engines_and_sidecars(f["ref_cache"])


def test_nothing_pushed_for_this_sku_is_not_a_mistyped_repository(tmp_path, fleet, registry):
    from app.fleet.bundle import describe, documents, load_private_key
    from app.fleet.registry import push
    from tests.fleet.helpers import NX, cache_files

    f = fleet
    files = describe(cache_files(tmp_path / "nx"))  # the repository holds another SKU only
    push(registry.repository("other/x"), files,
         documents(files, NX, load_private_key(f["keys"] / "fleet.pem")), insecure=True)
    absent = cli("--config", str(f["robot"]), "pull", "--repository", registry.repository("other/x"),
                 "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert absent.returncode == 0 and "no artifact" in absent.stdout, absent.stderr
    assert [e["kv"]["sku"] for e in json_events(absent.stderr)
            if e["kind"] == "c10.fleet.artifact.absent"] == [f["sku"]]
    typo = cli("--config", str(f["robot"]), "pull", "--repository", registry.repository("other/y"),
               "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert typo.returncode == 69
    assert "has no repository other/y (NAME_UNKNOWN)" in one_error_line(typo)


def test_pull_on_a_fresh_robot_then_status_and_verify_name_what_will_be_promoted(tmp_path, fleet,
                                                                                 registry):
    """The operator's path: no cache folder yet, a pull without --insecure (loopback), then
    status and verify before the reboot."""
    import shutil

    f = fleet
    repo = registry.repository()
    assert cli("--config", str(f["reference"]), "push", "--repository", repo,
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    shutil.rmtree(f["robot_cache"])
    pulled = cli("--config", str(f["robot"]), "pull", "--repository", repo)
    assert pulled.returncode == 0, pulled.stderr
    assert [e for e in json_events(pulled.stderr)
            if e["kind"] == "c10.fleet.candidates.unverifiable"] == []
    status = cli("--config", str(f["robot"]), "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["engines"]
    assert [(r["reusable"], r["reason"]) for r in rows] == [(False, "absent")] * 3
    assert [r["promote"] for r in rows] == ["candidate"] * 3
    table = cli("--config", str(f["robot"]), "status")
    assert table.stdout.count(" promote ") == 3, table.stdout
    verified = cli("--config", str(f["robot"]), "verify")
    assert verified.returncode == 0, verified.stderr + verified.stdout
    booted = cli("--config", str(f["robot"]), "run")
    assert "ready: 0 built, 0 reused, 3 promoted" in booted.stdout, booted.stderr


def test_pull_warns_when_the_config_cannot_verify_what_it_stored(tmp_path, fleet, registry, corpus):
    f = fleet
    repo = registry.repository()
    assert cli("--config", str(f["reference"]), "push", "--repository", repo,
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    for name, fleet_section in (("nokey", {}),
                                ("otherkey", {"public_key_file": str(f["keys"] / "other.pub.pem")})):
        config = write_job_config(tmp_path / name, corpus, fleet=fleet_section)
        pulled = cli("--config", str(config), "pull", "--repository", repo,
                     "--public-key", str(f["keys"] / "fleet.pub.pem"))
        assert pulled.returncode == 0, pulled.stderr
        [warning] = [e for e in json_events(pulled.stderr)
                     if e["kind"] == "c10.fleet.candidates.unverifiable"]
        assert warning["level"] == "WARNING" and "run will reject these candidates" in warning["msg"]
        why = "sets no fleet.public_key_file" if name == "nokey" else "the bundle verified with"
        assert why in warning["msg"]


def _slow_robot(tmp_path, corpus, f, **overrides):  # type: ignore[no-untyped-def]
    fleet = {"public_key_file": str(f["keys"] / "fleet.pub.pem"), **overrides.pop("fleet", {})}
    return write_job_config(tmp_path / "robot", corpus, fleet=fleet, **overrides)


@pytest.mark.slow
def test_a_registry_that_trickles_makes_pull_exit_69_fast(tmp_path, fleet, registry, corpus):
    from tests.fleet.helpers import slow_proxy

    f = fleet
    assert cli("--config", str(f["reference"]), "push", "--repository", registry.repository(),
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    # Never silent for blob_grace_s, but 1 byte every 2 s: given up on once a blob has taken
    # blob_grace_s + its size at min_rate_kib_s (3.1 s here), not after hours.
    robot = _slow_robot(tmp_path, corpus, f, fleet={"blob_grace_s": 3, "min_rate_kib_s": 4096})
    with slow_proxy(registry.address, every_s=2.0, for_s=20.0) as proxy:
        started = time.monotonic()
        pulled = cli("--config", str(robot), "pull", "--repository", proxy.repository())
        took = time.monotonic() - started
    assert pulled.returncode == 69, pulled.stderr
    assert "is too slow: 3 of" in one_error_line(pulled) and "fleet.min_rate_kib_s" in pulled.stderr
    assert took < 10, took
    assert leftovers(f["robot_cache"]) == []  # nothing stored, the stage swept on the way out


@pytest.mark.slow
def test_pulls_waiting_for_the_lock_or_a_slow_blob_end_on_sigterm_and_time_out_with_75(tmp_path, fleet,
                                                                           registry, corpus):
    from tests.fleet.helpers import slow_proxy

    f = fleet
    assert cli("--config", str(f["reference"]), "push", "--repository", registry.repository(),
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    robot = _slow_robot(tmp_path, corpus, f, lock_timeout_s=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}

    def pull(repository):  # type: ignore[no-untyped-def]
        return subprocess.Popen([sys.executable, "-m", "app", "--config", str(robot), "pull",
                                 "--repository", repository], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The documents pass, the engines trickle: the first pull holds the SKU's lock meanwhile.
    with slow_proxy(registry.address, every_s=0.5, for_s=30.0, min_bytes=4096) as proxy:
        holder = pull(proxy.repository())
        try:
            assert proxy.blob_started.wait(30), holder.communicate(timeout=5)
            timed_out = cli("--config", str(robot), "pull", "--repository", registry.repository())
            assert timed_out.returncode == 75, timed_out.stderr
            assert "held the lock" in one_error_line(timed_out)
            robot = _slow_robot(tmp_path, corpus, f, lock_timeout_s=60)
            waiter = pull(registry.repository())
            time.sleep(1.5)  # started, and waiting for the lock
            assert waiter.poll() is None, waiter.communicate()
            sent = time.monotonic()
            waiter.send_signal(signal.SIGTERM)
            _, err = waiter.communicate(timeout=10)
            assert time.monotonic() - sent < 2, err
            assert waiter.returncode == 143, err
            # The holder, mid-download with the lock held, ends the same way.
            sent = time.monotonic()
            holder.send_signal(signal.SIGTERM)
            _, err = holder.communicate(timeout=10)
            assert time.monotonic() - sent < 2 and holder.returncode == 143, err
        finally:
            holder.kill()
            holder.wait(10)


def test_pull_refusals_have_their_exit_codes(fleet, registry):
    f = fleet
    repo = registry.repository()
    assert cli("--config", str(f["reference"]), "push", "--repository", repo, "--insecure",
               "--private-key", str(f["keys"] / "other.pem")).returncode == 0
    forged = cli("--config", str(f["robot"]), "pull", "--repository", repo, "--insecure",
                 "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert forged.returncode == 65 and "signature does not verify" in one_error_line(forged)
    down = cli("--config", str(f["robot"]), "pull", "--repository", "127.0.0.1:9/fleet/engines",
               "--insecure", "--public-key", str(f["keys"] / "fleet.pub.pem"))
    assert down.returncode == 69 and "refused the connection" in one_error_line(down)
    assert leftovers(f["robot_cache"]) == []


def test_a_pull_killed_half_way_stores_nothing_and_the_next_completes(fleet, registry):
    f = fleet
    repo = registry.repository()
    assert cli("--config", str(f["reference"]), "push", "--repository", repo, "--insecure",
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    args = ("--config", str(f["robot"]), "pull", "--repository", repo, "--insecure",
            "--public-key", str(f["keys"] / "fleet.pub.pem"))
    # SIGKILL, as a power cut, after the 4th of 9 files started streaming in.
    killed = cli(*args, env={"ENGINE_INIT_FAULTS": "kill_at=candidate_chunk:*#4"})
    assert killed.returncode == -signal.SIGKILL
    partial = [n for n in leftovers(f["robot_cache"]) if n.startswith(f".{f['sku']}.tmp-")]
    assert len(partial) == 1 and f["sku"] not in leftovers(f["robot_cache"])
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert stored(f) == engines_of(f["ref_cache"])
    assert leftovers(f["robot_cache"]) == [f["sku"]]  # the killed pull's folder was swept


def test_two_pulls_at_once(fleet, registry):
    f = fleet
    repo = registry.repository()
    assert cli("--config", str(f["reference"]), "push", "--repository", repo, "--insecure",
               "--private-key", str(f["keys"] / "fleet.pem")).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    argv = [sys.executable, "-m", "app", "--config", str(f["robot"]), "pull", "--repository", repo,
            "--insecure", "--public-key", str(f["keys"] / "fleet.pub.pem")]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o[0].split(":")[0] for o in outs) == ["already stored", "stored"]
    assert stored(f) == engines_of(f["ref_cache"])
    assert leftovers(f["robot_cache"]) == [f["sku"]]


def test_sigterm_ends_a_push_stuck_on_the_registry_within_2_s(fleet):
    """A registry that answers /v2/ and then holds every upload open: SIGTERM ends ``push``
    within 2 s (143), as it ends pull and the fleet trust commands."""
    f = fleet
    with stalling_registry() as (repository, held):
        sigterm_when_held(held, "--config", str(f["reference"]), "push", "--repository",
                          repository, "--insecure", "--private-key", str(f["keys"] / "fleet.pem"),
                          wait_s=60)


def test_a_repository_name_with_capitals_is_exit_78_for_pull_and_push(tmp_path, corpus, registry):
    """The registry answers such a name with a plain 404 page: pull said "no artifact" (exit
    0) and push "HTTP 404"; the name is now refused before any request."""
    from tests.fleet.helpers import make_keys

    keys = make_keys(tmp_path / "keys", "fleet")
    config = write_job_config(tmp_path / "robot", corpus)
    (tmp_path / "robot" / "cache").mkdir()
    where = registry.repository("Fleet/Engines")
    for args in (["pull", "--public-key", str(keys.public_file)],
                 ["push", "--private-key", str(keys.private_file)]):
        done = cli("--config", str(config), *args, "--repository", where)
        line = one_error_line(done)
        assert done.returncode == 78, (args, line)
        assert "'Fleet/Engines' is not a registry repository name" in line
        assert "lowercase letters and digits" in line


def test_a_fleet_command_turns_the_collector_back_on(tmp_path):
    """The collector is off for the start-up (app/__main__.py); keygen and the trust commands
    read no config, so the fleet group turns it back on before they run."""
    import gc

    from click.testing import CliRunner

    from app.cli import cli as group

    gc.disable()
    try:
        done = CliRunner().invoke(group, ["fleet", "keygen", str(tmp_path / "k"), str(tmp_path / "k.pub")])
        assert done.exit_code == 0, done.output
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
