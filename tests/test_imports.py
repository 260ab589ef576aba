"""A warm boot and `validate` load no heavy SDK (onnx, onnxruntime, numpy, tensorrt, cuda; a
boot's host probe imports cuda-python where it is installed, to ask the driver),
nor prometheus_client unless a metrics textfile is configured, nor the fleet commands' clients;
the package's modules import each other in the order of import-linter's contracts in
pyproject.toml (layers, independent backends, no cycle)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, cli, write_job_config

HEAVY = {"onnx", "onnxruntime", "numpy", "tensorrt", "cuda", "prometheus_client",
         "oras", "cryptography", "requests", "tuf", "securesystemslib"}  # the last five: fleet only
PROBE = """
import json, sys
from app.cli import main
rc = main(sys.argv[2:])
names = sys.argv.pop(1).split(',')
heavy = {n for n in names for m in sys.modules if m == n or m.startswith(n + '.')}
print(json.dumps({"rc": rc, "heavy": sorted(heavy)}))
"""


#: What a boot's host probe imports (app.host): cuda-python, where it is installed.
PROBED = ["cuda"] if importlib.util.find_spec("cuda") else []


def _modules_after(*args: str, names: set[str] = HEAVY) -> dict:
    argv = [sys.executable, "-c", PROBE, ",".join(sorted(names)), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_validate_imports_no_heavy_sdk(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    assert _modules_after("--config", str(job), "validate") == {"rc": 0, "heavy": []}


def test_validate_loads_neither_the_fleet_commands_nor_a_backend(tmp_path, corpus):
    """The CLI imports a command's module when the command is named (app.cli's lazy group),
    and the config only the backends' names (with TensorRT installed, validate also reads its
    op support)."""
    job = write_job_config(tmp_path, corpus)
    unwanted = {"app.commands.fleet", "app.commands.fleet_trust", "app.backends.onnxruntime",
                "app.backends.base"}
    assert _modules_after("--config", str(job), "validate", names=unwanted) == {"rc": 0, "heavy": []}


def test_warm_run_imports_no_heavy_sdk(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    assert cli("--config", str(job), "run").returncode == 0  # cold: builds with ONNX Runtime
    assert _modules_after("--config", str(job), "run") == {"rc": 0, "heavy": PROBED}
    # The probe sees what it should: a cold run does load ONNX Runtime.
    (tmp_path / "cache" / next(p.name for p in (tmp_path / "cache").glob("dinov2*.ort"))).unlink()
    assert "onnxruntime" in _modules_after("--config", str(job), "run")["heavy"]


def test_warm_run_with_recorded_accuracy_imports_no_heavy_sdk(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus, verify="accuracy", accuracy={"random_samples": 2})
    assert cli("--config", str(job), "run").returncode == 0  # cold: builds and checks
    assert _modules_after("--config", str(job), "run") == {"rc": 0, "heavy": PROBED}
    # Another tolerance: the recorded figures no longer cover the engine, so the check runs.
    job = write_job_config(tmp_path, corpus, verify="accuracy",
                           accuracy={"random_samples": 2, "metric": "cosine", "threshold": 0.999})
    assert {"numpy", "onnxruntime"} <= set(_modules_after("--config", str(job), "run")["heavy"])


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts in ``root``'s pyproject.toml, checked on ``root/app``."""
    run = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, cwd=root,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(root)})


def test_the_import_contracts_hold():
    """Layers, independent backends, no cycles: the contracts in pyproject.toml."""
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_the_import_contracts_catch_a_cycle_and_an_upward_import(tmp_path):
    """The check can fail: the bottom layer importing the CLI, a hidden TYPE_CHECKING one too."""
    shutil.copytree(REPO / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    values = tmp_path / "app" / "values.py"
    values.write_text(values.read_text() + "\nif TYPE_CHECKING:\n    from app.cli import main\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1
    assert "app.values -> app.cli" in result.stdout
    assert "No cycles are allowed in app." in result.stdout


def test_warm_run_with_metrics_loads_prometheus_client_only(tmp_path, corpus):
    """The other side of the warm-run check: the probe sees prometheus_client when it loads."""
    job = write_job_config(tmp_path, corpus, metrics_textfile=str(tmp_path / "engine_init.prom"))
    assert cli("--config", str(job), "run").returncode == 0
    heavy = sorted([*PROBED, "prometheus_client"])
    assert _modules_after("--config", str(job), "run") == {"rc": 0, "heavy": heavy}


def test_public_names_are_listed_once_and_resolve():
    import app

    assert sorted(app._EXPORTS) == app.__all__
    for name in app.__all__:
        assert getattr(app, name).__name__ == name


def test_importing_the_package_is_light():
    out = subprocess.run([sys.executable, "-c", "import app, sys; print(sorted(sys.modules))"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout.replace("'", '"'))}
    assert not loaded & (HEAVY | {"pydantic", "yaml", "click"})
