"""The command group, ``run`` and every exit code, through real processes (the other
commands: tests/test_commands.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, json_events, write_job_config


def test_run_builds_then_reuses_and_writes_the_marker(tmp_path, job):
    first = cli("--config", str(job), "run")
    assert first.returncode == 0, first.stderr
    assert "3 built, 0 reused" in first.stdout
    kinds = [e["kind"] for e in json_events(first.stderr)]
    assert kinds.count("c10.engine.cache.miss") == 3 and "c10.marker.written" in kinds
    second = cli("--config", str(job), "run")
    assert second.returncode == 0 and "0 built, 3 reused" in second.stdout
    marker = json.loads((tmp_path / "run" / "ready.json").read_text())
    assert marker["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert marker["backend"] == "onnxruntime" and marker["backend_version"]
    assert [e["outcome"] for e in marker["engines"]] == ["reused"] * 3
    assert {e["model_name"] for e in marker["engines"]} == {"dinov2_vpr", "lightglue", "aliked"}
    for engine in marker["engines"]:
        assert os.path.isfile(engine["engine_path"]) and len(engine["sha256"]) == 64
    assert set(marker["phase_timings_s"]) >= {"config", "probe", "verify", "compile"}
    [written] = [e for e in json_events(second.stderr) if e["kind"] == "c10.marker.written"]
    assert set(written["kv"]["phase_timings_s"]) >= {"config", "probe", "verify", "marker"}


def test_schema_and_help(job):
    schema = cli("schema")
    assert schema.returncode == 0 and "backbones" in json.loads(schema.stdout)["properties"]
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("run", "validate", "status", "verify", "prune", "wait-ready", "schema"):
        assert command in helped.stdout


@pytest.mark.parametrize(("group", "listed"), [
    ([], {"run", "validate", "status", "verify", "prune", "wait-ready", "schema", "export",
          "import", "push", "pull", "fleet"}),
    (["fleet"], {"keygen", "trust"}),
    (["fleet", "trust"], {"init", "release", "delegate", "timestamp", "add-key", "revoke-key",
                          "rotate-key", "renew-root", "push"}),
])
def test_help_lists_every_command_with_a_whole_sentence(group, listed):
    """Click cuts a long first sentence with '...': each command's short help must fit."""
    helped = cli(*group, "--help")
    assert helped.returncode == 0, helped.stderr
    commands = helped.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    rows = {line.split()[0]: line for line in commands.splitlines() if not line.startswith("   ")}
    assert set(rows) == listed
    assert "..." not in commands and all(row.rstrip().endswith(".") for row in rows.values()), commands
    assert "Fleet helpers." not in helped.stdout


@pytest.mark.parametrize("command", [["run"], ["fleet", "keygen"], ["fleet", "trust", "init"]])
def test_a_command_s_help_says_the_global_options_follow_it_too(command):
    helped = cli(*command, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--config, --log-format and --debug may also follow the command." in helped.stdout


@pytest.mark.parametrize(("args", "said", "helped"), [
    (["valdate"], "No such command 'valdate'. Did you mean 'validate'?", "engine-init"),
    (["run", "--bogus"], "No such option '--bogus'.", "engine-init run"),
    (["fleet", "keygen", "a.pem"], "Missing argument 'PUBLIC'.", "engine-init fleet keygen"),
    (["wait-ready", "--timeout", "nan"], "Invalid value for '--timeout': nan is not a finite",
     "engine-init wait-ready"),
])
def test_a_usage_error_is_2_and_one_line_with_a_hint(args, said, helped):
    """Click's own message, in the project's one-line format, naming the help to read."""
    result = cli(*args, "--log-format", "text")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"engine-init: error: {said}"), line
    assert line.endswith(f" (hint: run `{helped} --help`)"), line
    assert "Usage:" not in result.stderr


def test_a_bad_log_format_from_the_environment_names_the_variable():
    result = cli("schema", env={"ENGINE_INIT_LOG_FORMAT": "xml"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "ENGINE_INIT_LOG_FORMAT" in result.stderr and "'xml' is not one of" in result.stderr
    typed = cli("--log-format", "xml", "schema", env={"ENGINE_INIT_LOG_FORMAT": "json"})
    assert typed.returncode == 2 and "ENGINE_INIT_LOG_FORMAT" not in typed.stderr
    assert "Invalid value for '--log-format'" in typed.stderr


def test_missing_model_is_78_and_leaves_no_marker(tmp_path, job):
    assert cli("--config", str(job), "run").returncode == 0
    doc = yaml.safe_load(job.read_text())
    doc["backbones"][0]["onnx_path"] = str(tmp_path / "gone.onnx")
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 78 and "gone.onnx" in result.stderr
    assert "(hint: correct the path in the config, or put the file there)" in result.stderr
    assert not (tmp_path / "run" / "ready.json").exists()


def test_build_failure_is_70_and_bad_model_data_is_65(tmp_path, job, corpus):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(corpus["aliked"].read_bytes()[:200])
    doc = yaml.safe_load(job.read_text())
    doc["backbones"][2]["onnx_path"] = str(broken)
    job.write_text(yaml.safe_dump(doc))
    result = cli("--config", str(job), "run")
    assert result.returncode == 65 and "broken.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    failed = [e for e in json_events(result.stderr) if e["kind"] == "c10.run.failed"]
    assert failed and failed[0]["kv"]["exit_code"] == 65


def test_a_compile_error_names_the_configured_calibration_path(tmp_path, corpus):
    """Log consumers match c10.engine.compile.error on the calibration_path of the config; the
    model's own batch folder is calibration_dir."""
    calib = tmp_path / "calib"
    (calib / "aliked").mkdir(parents=True)
    import numpy as np

    np.save(calib / "aliked" / "batch0.npy", np.zeros((1, 3, 9, 9), dtype="float32"))  # bad shape
    job = write_job_config(tmp_path, corpus, calibration_path=str(calib))
    result = cli("--config", str(job), "run")
    assert result.returncode == 65, result.stderr[-800:]
    [error] = [e for e in json_events(result.stderr) if e["kind"] == "c10.engine.compile.error"]
    assert error["kv"]["model_name"] == "aliked"
    assert error["kv"]["calibration_path"] == str(calib)
    assert error["kv"]["calibration_dir"] == str(calib / "aliked")


def test_exit_codes_by_name_are_the_documented_numbers():
    from app import errors
    from app.cli import EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, exit_code_for

    documented = [(errors.ConfigError("x"), 78), (errors.ModelDataError("x"), 65),
                  (errors.BackendUnavailableError("x"), 69), (errors.EngineBuildError("x"), 70),
                  (errors.CacheWriteError("x"), 73), (errors.DiskFullError("x"), 74),
                  (errors.LockTimeoutError("x"), 75), (errors.MarkerError("x"), 75),
                  (errors.BuildCancelledError(2), 130), (errors.BuildCancelledError(15), 143),
                  (RuntimeError("x"), 70)]
    assert [exit_code_for(exc) for exc, _ in documented] == [code for _, code in documented]
    assert (EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM) == (2, 130, 143)


def test_only_a_process_that_main_owns_skips_the_final_collections(job):
    """gc.freeze() is for the process's exit; an in-process caller keeps a normal heap."""
    import gc
    import subprocess
    import sys

    from app.cli import main

    before = gc.get_freeze_count()
    assert main(["--config", str(job), "validate"]) == 0
    assert gc.get_freeze_count() == before
    probe = ("import gc, sys\nfrom app.cli import main\n"
             "sys.argv[1:] = ['--config', sys.argv[1], 'validate']\nmain()\n"
             "print(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe, str(job)], capture_output=True, text=True,
                         check=True).stdout
    assert int(out.strip().splitlines()[-1]) > 1000


def test_global_options_also_work_after_the_command(job):
    """As users type them: ``engine-init validate --config x.yaml``, flags in any order."""
    for args in (["validate", "--config", str(job)], [f"--config={job}", "validate"],
                 ["validate", "--log-format", "text", f"--config={job}", "--debug"]):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("config OK: 3 model(s)")
    # A command's own options and arguments are left where they are.
    assert "No such option '--bogus'" in cli("validate", "--bogus", "--config", str(job)).stderr


def test_in_text_mode_each_error_is_printed_once(tmp_path, job, corpus):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(corpus["aliked"].read_bytes()[:200])
    doc = yaml.safe_load(job.read_text())
    doc["backbones"][2]["onnx_path"] = str(broken)
    job.write_text(yaml.safe_dump(doc))
    result = cli("--log-format", "text", "--config", str(job), "run")
    assert result.returncode == 65
    assert result.stderr.count("broken.onnx is not a readable ONNX model") == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("engine-init: error: aliked: ")
    assert "built dinov2_vpr" in result.stderr  # the events before the failure are all there
    # A config error too; in JSON lines the event stays beside the line.
    doc["precison"] = "fp16"
    job.write_text(yaml.safe_dump(doc))
    text = cli("validate", "--config", str(job), "--log-format", "text")
    assert text.returncode == 78 and text.stderr.count("precison") == 1, text.stderr
    json_mode = cli("validate", "--config", str(job), "--log-format", "json")
    assert [e["kind"] for e in json_events(json_mode.stderr)] == ["c10.run.failed"]
