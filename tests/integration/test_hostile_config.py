"""Config values written to break the job rather than configure it, through the real CLI: each
is a one-line config error (exit 78) from ``validate`` and from ``run`` alike, in well under a
second of work, whose message never repeats the (expanded) input; nothing in the cache changes."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli, snapshot, write_job_config

#: Nine lines that expand to 9^9 (387 million) strings, under an enum key.
BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9)}]\n"
               for p, a in zip("abcdefgh", "bcdefghi", strict=True))
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB

#: (name, text added to a valid config, environment, words the error line must hold)
CASES = [
    ("alias-bomb", BOMB + "precision: *i\n", {}, ["aliases are expanded"]),
    ("self-alias", "x: &x [*x]\n", {}, ["alias"]),
    ("list-as-key", "? [1, 2]\n: x\n", {}, ["mapping key must be a string"]),
    ("int-as-key", "governor: {1: x}\n", {}, ["mapping key must be a string"]),
    ("int-5000-digits", f"workspace_mb: {'9' * 5000}\n", {}, ["integer of 5000"]),
    ("env-int-5000-digits", "", {"ENGINE_INIT_WORKSPACE_MB": "9" * 5000},
     ["ENGINE_INIT_WORKSPACE_MB", "integer of 5000"]),
    ("env-nested-3000", "", {"ENGINE_INIT_PRECISION": "[" * 3000 + "]" * 3000},
     ["ENGINE_INIT_PRECISION", "nest"]),
    ("env-nested-100", "", {"ENGINE_INIT_BACKBONES": "[" * 100 + "]" * 100},
     ["ENGINE_INIT_BACKBONES", "nested more than"]),
    ("env-bomb", "", {"ENGINE_INIT_ACCURACY": "{" + BOMB.replace("\n", ", ") + "z: *i}"},
     ["ENGINE_INIT_ACCURACY"]),
    ("weights-factor-inf", "governor: {weights_factor: .inf}\n", {},
     ["governor.weights_factor", "finite"]),
    ("weights-factor-1e308", "governor: {weights_factor: 1e308}\n", {},
     ["governor.weights_factor", "less than or equal to 100"]),
    ("reserve-400-digits", f"governor: {{reserve_mb: {'9' * 400}}}\n", {}, ["integer of 400"]),
    ("reserve-huge", "governor: {reserve_mb: 99999999999999999}\n", {}, ["governor.reserve_mb"]),
    ("lock-timeout-nan", "lock_timeout_s: .nan\n", {}, ["lock_timeout_s", "finite"]),
    ("poll-inf", "governor: {poll_s: .inf}\n", {}, ["governor.poll_s"]),
    ("thermal-wait-1e300", "governor: {thermal_wait_s: 1e300}\n", {}, ["governor.thermal_wait_s"]),
    ("dimension-huge", None, {}, ["expected_input_shape"]),
    ("40000-bad-dimensions", "backbones: [{model_name: m, onnx_path: /nonexistent.onnx, "
     f"expected_input_shape: [{', '.join(['-1'] * 40000)}]}}]\n", {},
     ["expected_input_shape[0]", "more"]),
    ("60k-input-name", "backbones:\n- model_name: m\n  onnx_path: /nonexistent.onnx\n"
     f"  input_shapes:\n    ? {'n' * 60000}\n    : [-1]\n", {}, ["input_shapes"]),
    ("value-range-inf", "accuracy: {value_range: [0, .inf]}\n", {}, ["accuracy.value_range"]),
]


def _config(job: Path, extra: str | None) -> None:
    """The valid config with ``extra`` appended (the top-level keys it sets taken out first, a
    duplicate key being an error of its own); None: the first model's shape made huge."""
    doc = yaml.safe_load(job.read_text())
    if extra is None:
        doc["backbones"][0]["expected_input_shape"] = [1, 3, 32, 2**40]
        extra = ""
    for key in re.findall(r"^(\w+):", extra, flags=re.M):
        doc.pop(key, None)
    job.write_text(yaml.safe_dump(doc) + extra)


@pytest.fixture(scope="module")
def warm_root(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("warm-config")
    done = cli("--config", str(write_job_config(root, corpus)), "run")
    assert done.returncode == 0, done.stderr[-800:]
    return root


@pytest.fixture
def job(warm_root: Path, tmp_path: Path, corpus: dict[str, Path]) -> Path:
    """A copy of the warm job folder, its config naming the copy."""
    root = tmp_path / "job"
    shutil.copytree(warm_root, root, symlinks=True)
    return write_job_config(root, corpus)


@pytest.fixture
def warm(job: Path) -> dict[str, bytes]:
    return snapshot(job.parent / "cache")


@pytest.mark.parametrize(("name", "extra", "env", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_config_value_is_a_one_line_config_error(job, warm, name, extra, env, words):
    _config(job, extra)
    for command in ("validate", "run"):
        started = time.monotonic()
        done = cli("--config", str(job), command, env=env, timeout=20)
        elapsed = time.monotonic() - started
        assert done.returncode == 78, (command, done.stderr[-1500:])
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("engine-init: error:")]
        for word in words:
            assert word in line, line
        assert len(line) < 600 and "lol" not in line, line[:600]  # never the input, expanded
        assert elapsed < 10, (command, elapsed)  # start-up included; the bomb once took 30 s
    cache = job.parent / "cache"
    after = snapshot(cache)
    assert {k: after.get(k) for k in warm if not k.startswith(".engine-init")} == {
        k: v for k, v in warm.items() if not k.startswith(".engine-init")}


def test_the_bomb_is_refused_in_milliseconds(tmp_path):
    """The limit is checked on the composed document, before anything is expanded."""
    from app.errors import ConfigError
    from app.loading import load_config

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "precision: *i\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_config(path, env={})
    assert time.perf_counter() - started < 0.5
