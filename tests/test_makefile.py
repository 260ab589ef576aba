"""What ``make demo`` and ``make test`` print, read from the recipes make would run (``make -n``)
and from the commands they run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import REPO, cli

pytestmark = pytest.mark.skipif(not any(os.access(os.path.join(d, "make"), os.X_OK)
                                        for d in os.environ.get("PATH", "").split(os.pathsep)),
                                reason="no make on the PATH")


def _recipe(target: str, tmp_path, installed: bool = False) -> list[str]:
    venvs = {"VENV": tmp_path / "venv", "DEMO_VENV": tmp_path / "venv-demo"}
    for venv in venvs.values():
        venv.mkdir(parents=True)
        if installed:
            (venv / ".installed").touch()
            os.utime(venv / ".installed", (2**31, 2**31))  # newer than pyproject.toml
    out = subprocess.run(["make", "-n", target, *(f"{k}={v}" for k, v in venvs.items())],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.splitlines()


def test_every_install_silences_setuptools_editable_banner_and_nothing_else(tmp_path):
    installs = [line for target in ("demo", "test") for line in _recipe(target, tmp_path / target)
                if "/bin/pip install" in line]
    assert len(installs) == 4
    prefixes = {shlex.split(line)[0] for line in installs}
    assert prefixes == {"PYTHONWARNINGS=ignore:Editable installation"}
    # The filter, as Python reads it, drops setuptools' "Editable installation." notice (its
    # summary starts the message) and keeps every other warning.
    value = prefixes.pop().split("=", 1)[1]
    probe = ("import warnings\n"
             "warnings.warn('Editable installation.\\n!!\\n  Please be careful with folders', UserWarning)\n"
             "warnings.warn('Editable install will be performed using a meta path finder', UserWarning)\n"
             "warnings.warn('some other warning', UserWarning)\n")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env={**os.environ, "PYTHONWARNINGS": value}, check=True).stderr
    assert "Editable installation" not in shown and "some other warning" in shown
    assert "meta path finder" in shown  # a prefix of the message, not any "Editable ..."


def test_the_demo_says_what_each_step_does_in_text(tmp_path, job):
    lines = _recipe("demo", tmp_path, installed=True)
    banners = [line for line in lines if line.startswith("echo ")]
    assert not any("every engine is compiled" in line for line in banners)
    assert any("build the others" in line for line in banners)
    runs = [line for line in lines if "/bin/engine-init " in line]
    assert [line.rsplit(" ", 1)[1] for line in runs] == ["run", "run", "status"]
    assert all(line.startswith("ENGINE_INIT_LOG_FORMAT=text ") for line in runs)
    # status in text, as the demo runs it: a table and text lines, no JSON among them.
    status = cli("--config", str(job), "status", env={"ENGINE_INIT_LOG_FORMAT": "text"})
    assert status.returncode == 0 and status.stdout.startswith("SKU ")
    for line in (status.stdout + status.stderr).splitlines():
        assert not re.match(r"\s*\{", line), line
