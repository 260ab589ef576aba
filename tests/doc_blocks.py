"""How the code blocks of README.md and docs/*.md are checked (the root conftest.py hands
them to Sybil): ``python`` executed, ``yaml`` validated as the config (or a fragment of it, a
Kubernetes object, a part of compose.yaml), ``sh`` parsed by bash and every ``engine-init``
command in it by the CLI, ``text`` not run; a block opts out with
``<!-- skip: next "reason" -->``. The rules for writers: docs/architecture.md, "Contributing".
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("python", "yaml", "sh", "text")
#: Words before a command that do not change which program runs.
_PREFIXES = {"sudo", "exec", "time"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
_CONFIG_FRAGMENT_BASE = {"backbones": [{"model_name": "m", "onnx_path": "m.onnx",
                                        "expected_input_shape": [1, 3, 224, 224]}]}


def check_yaml(source: str) -> None:
    doc = yaml.safe_load(source)
    if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
        import kubernetes_validate

        kubernetes_validate.validate(doc, "1.31", strict=True)
    elif isinstance(doc, dict) and "services" in doc:
        _check_compose_part(doc)
    else:
        _check_config(doc)


def _check_config(doc: Any) -> None:
    from app.loading import load_config

    if isinstance(doc, dict) and "backbones" not in doc:
        doc = {**_CONFIG_FRAGMENT_BASE, **doc}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        load_config(path, env={}, check_files=False)  # ConfigError: the line says what is wrong


def _check_compose_part(doc: dict[str, Any]) -> None:
    files = [yaml.safe_load((REPO / name).read_text()) for name in ("compose.yaml", "compose.fleet.yaml")]
    for name, service in doc["services"].items():
        if not any(_contains(f.get("services", {}).get(name), service) for f in files):
            raise AssertionError(f"service {name!r} is not what compose.yaml or compose.fleet.yaml "
                                 f"says: {json.dumps(service)}")


def _contains(whole: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and all(any(_contains(w, p) for w in whole) for p in part)
    return bool(whole == part)


def engine_init_commands(source: str) -> list[list[str]]:
    """The argument lists of every ``engine-init`` command in a shell block."""
    commands: list[list[str]] = []
    for line in source.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token not in _OPERATORS:
                current.append(token)
                continue
            words = current
            while words and (words[0] in _PREFIXES or _ASSIGNMENT.match(words[0])):
                words = words[1:]
            if words and words[0] == "engine-init":
                commands.append(words[1:])
            current = []
    return commands


_PARSE = """
import json, sys
from app.cli import cli
for args in json.loads(sys.argv[1]):
    code = cli.main(args=[*args, "--help"], prog_name="engine-init", standalone_mode=False)
    if code not in (0, None):
        sys.exit(f"engine-init {' '.join(args)}: exit {code}")
"""


def check_shell(source: str) -> None:
    syntax = subprocess.run(["bash", "-n"], input=source, capture_output=True, text=True)
    if syntax.returncode != 0:
        raise AssertionError(f"bash -n: {syntax.stderr.strip()}")
    commands = engine_init_commands(source)
    if commands:  # parsed by the CLI itself: an unknown command or option is a usage error
        parsed = subprocess.run([sys.executable, "-c", _PARSE, json.dumps(commands)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        if parsed.returncode != 0:
            raise AssertionError(parsed.stderr.strip().splitlines()[-1] if parsed.stderr else
                                 f"exit {parsed.returncode}")
