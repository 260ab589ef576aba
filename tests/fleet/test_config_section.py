"""The config's ``fleet`` section: validated like every key, paths relative to the config file,
and used by the fleet commands as defaults that their options override (real processes, the
real loopback registry of tests/fleet/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.loading import load_config
from tests.helpers import cli, write_job_config


def test_fleet_keys_resolve_against_the_config_folder_and_default_to_unset(tmp_path, corpus):
    config = load_config(write_job_config(tmp_path, corpus, fleet={
        "repository": "registry.local:5000/fleet/engines", "insecure": True,
        "private_key_file": "keys/fleet.pem", "public_key_file": "../shared/fleet.pub.pem"}), env={})
    assert config.fleet.repository == "registry.local:5000/fleet/engines" and config.fleet.insecure
    assert config.fleet.private_key_file == tmp_path / "keys" / "fleet.pem"
    assert config.fleet.public_key_file == tmp_path.parent / "shared" / "fleet.pub.pem"
    plain = load_config(write_job_config(tmp_path / "plain", corpus), env={})
    assert plain.fleet.repository is None and not plain.fleet.insecure
    assert plain.fleet.private_key_file is None and plain.fleet.public_key_file is None


@pytest.mark.parametrize(("fleet", "words"), [
    ({"repo": "x"}, "fleet.repo"),
    ({"insecure": "maybe"}, "fleet.insecure"),
    ({"repository": ""}, "fleet.repository"),
])
def test_a_bad_fleet_key_is_one_error_naming_it(tmp_path, corpus, fleet, words):
    with pytest.raises(ConfigError) as caught:
        load_config(write_job_config(tmp_path, corpus, fleet=fleet), env={})
    assert words in str(caught.value) and "\n" not in str(caught.value)


def _keys(folder: Path) -> None:
    folder.mkdir()
    made = cli("fleet", "keygen", str(folder / "fleet.pem"), str(folder / "fleet.pub.pem"))
    assert made.returncode == 0, made.stderr


def test_push_and_pull_take_the_registry_and_keys_from_the_config(tmp_path, corpus, registry):
    (tmp_path / "reference").mkdir()
    _keys(tmp_path / "reference" / "keys")
    repo = registry.repository()
    reference = write_job_config(tmp_path / "reference", corpus, fleet={
        "repository": repo, "insecure": True, "private_key_file": "keys/fleet.pem"})
    robot = write_job_config(tmp_path / "robot", corpus, fleet={
        "repository": repo, "insecure": True,
        "public_key_file": str(tmp_path / "reference" / "keys" / "fleet.pub.pem")})
    (tmp_path / "robot" / "cache").mkdir()
    assert cli("--config", str(reference), "run").returncode == 0
    sku = json.loads(cli("--config", str(reference), "status", "--json").stdout)["sku"]
    pushed = cli("--config", str(reference), "push")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().startswith(f"{repo}:{sku}@sha256:")
    pulled = cli("--config", str(robot), "pull")
    assert pulled.returncode == 0, pulled.stderr
    files = tmp_path / "robot" / "cache" / "candidates" / sku / "files"
    assert sorted(p.name for p in files.iterdir()) == sorted(
        p.name for p in (tmp_path / "reference" / "cache").iterdir()
        if p.is_file() and not p.name.startswith("."))
    # The option overrides the config: another repository, which the registry does not know.
    other = cli("--config", str(robot), "pull", "--repository", registry.repository("other/x"))
    assert other.returncode == 69 and "no repository other/x" in other.stderr


def test_pull_and_import_write_only_to_the_candidates_dir(tmp_path, corpus, reference):
    """fleet.candidates_dir: a volume of its own; the cache root is never written (here it
    does not even exist), and run promotes from there."""
    candidates = tmp_path / "volumes" / "candidates"
    robot = write_job_config(tmp_path / "robot", corpus, fleet={
        "public_key_file": str(reference.public), "candidates_dir": str(candidates)})
    imported = cli("--config", str(robot), "import", str(reference.bundle))
    assert imported.returncode == 0, imported.stderr
    assert not (tmp_path / "robot" / "cache").exists()
    [sku] = [p for p in candidates.iterdir() if p.is_dir()]
    assert (sku / "files").is_dir()
    ran = cli("--config", str(robot), "run")
    assert "ready: 0 built, 0 reused, 3 promoted" in ran.stdout, ran.stderr


def test_a_fleet_setting_neither_configured_nor_given_is_exit_78(tmp_path, corpus):
    job = write_job_config(tmp_path, corpus)
    for command, words in ((["pull"], "fleet.repository is not set and --repository"),
                           (["import", str(tmp_path / "b")], "fleet.public_key_file is not set"),
                           (["export", str(tmp_path / "b")], "fleet.private_key_file is not set")):
        result = cli("--config", str(job), *command)
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("engine-init: error:")]
        assert result.returncode == 78, (command, result.stderr)
        assert len(errors) == 1 and words in errors[0] and "Traceback" not in result.stderr
