"""docs/fleet.md's quickstart, run as written (the registry's address aside) against a real
registry: a reference builds and pushes, a robot pulls, sees what will be promoted, and its
run promotes every engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # the job runs four times


def quickstart() -> str:
    """The quickstart's last shell block: the one a reader runs in an empty folder."""
    text = (REPO / "docs" / "fleet.md").read_text()
    section = text[text.index("## Quickstart"):].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)[-1]


def test_the_quickstart_promotes_every_engine_copied_as_written(tmp_path: Path, registry):
    script = quickstart()
    assert "public_key_file: " in script and "insecure: true" not in script
    port = registry.address.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(REPO))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c",
                           script.replace("localhost:5000", f"localhost:{port}")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("ready: 0 built, 0 reused, 2 promoted"), done.stdout
    assert any(line.startswith("ready: 2 built, 0 reused") for line in lines)
    assert any(line.startswith("stored: 6 file(s)") for line in lines)
    assert sum(" promote " in line for line in lines) == 2, done.stdout
    assert "c10.fleet.candidates.unverifiable" not in done.stderr
