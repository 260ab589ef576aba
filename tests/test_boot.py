"""The entry point: which command lines start early hashing, and with which config."""

from __future__ import annotations

import gc
import subprocess
import sys

import click
import pytest

from app import boot
from app.cli import cli
from tests.helpers import write_job_config


@pytest.mark.parametrize(("args", "expected"), [
    (["run"], (True, None)),
    (["--config", "c.yaml", "run"], (True, "c.yaml")),
    (["--config=c.yaml", "--log-format", "json", "--debug", "run"], (True, "c.yaml")),
    (["--log-format", "run", "validate"], (False, None)),   # "run" is an option's value here
    (["--config", "run"], (False, "run")),
    (["validate"], (False, None)),
    (["--help"], (False, None)),
    (["--", "run"], (True, None)),
    ([], (False, None)),
])
def test_run_and_its_config_are_read_like_click_reads_them(args, expected):
    assert boot._run_config(args) == expected


def test_the_options_that_take_a_value_are_the_cli_groups():
    valued = {opt for p in cli.params if isinstance(p, click.Option) and not p.is_flag
              for opt in p.opts}
    assert valued == set(boot._VALUED)


def test_run_starts_hashing_last_boots_engines_before_the_cli_loads(tmp_path, corpus, monkeypatch):
    job = write_job_config(tmp_path, corpus)
    assert boot.main(["--config", str(job), "run"]) == 0  # cold: builds, names its engines
    started = []
    monkeypatch.setattr("app.cache.warm.start", lambda root: started.append(root) or 0)
    assert boot.main(["--config", str(job), "run"]) == 0
    assert started == [tmp_path / "cache"]
    assert boot.main(["--config", str(job), "validate"]) == 0
    assert len(started) == 1


def test_only_a_process_that_main_owns_skips_the_final_collections(tmp_path, corpus):
    """gc.freeze() is for the process's exit; an in-process caller keeps a normal heap."""
    job = write_job_config(tmp_path, corpus)
    before = gc.get_freeze_count()
    assert boot.main(["--config", str(job), "validate"]) == 0
    assert gc.get_freeze_count() == before
    probe = ("import gc, sys\nfrom app import boot\nsys.argv[1:] = ['--config', sys.argv[1], 'validate']\n"
             "boot.main()\nprint(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe, str(job)], capture_output=True, text=True,
                         check=True).stdout
    assert int(out.strip().splitlines()[-1]) > 1000
