"""The checks that run the docs' code blocks (tests/doc_blocks.py) can fail, and every block
names a language they know."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.errors import ConfigError
from tests.doc_blocks import LANGUAGES, REPO, check_shell, check_yaml, engine_init_commands

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_fenced_block_names_a_language_that_is_checked(page):
    fences = re.findall(r"^```(.*)$", page.read_text(), flags=re.M)
    assert len(fences) % 2 == 0, "a fence is not closed"
    openings = fences[::2]
    assert all(info.strip() in LANGUAGES for info in openings), (page.name, openings)


def test_a_yaml_block_is_validated_as_the_config():
    check_yaml("governor: {enabled: false}\nprecision: int8\n")  # a fragment
    with pytest.raises(ConfigError, match="did you mean 'precision'"):
        check_yaml("precison: int8\n")
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.onnx_path"):
        check_yaml("backbones:\n  - model_name: a\n")


def test_kubernetes_and_compose_blocks_are_checked_as_what_they_are():
    check_yaml("services:\n  engine-init:\n    restart: \"no\"\n")
    with pytest.raises(AssertionError, match=r"not what compose\.yaml"):
        check_yaml("services:\n  engine-init:\n    restart: always\n")
    check_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
    with pytest.raises(Exception, match="spec"):
        check_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {}\n")


def test_engine_init_commands_are_found_through_shell_syntax():
    source = ("sudo engine-init --config c.yaml run && engine-init status --json\n"
              "ENGINE_INIT_PRECISION=int8 engine-init \\\n  validate  # a comment\n"
              "docker run --rm engine-init:jp6.2 run; echo engine-init\n")
    assert engine_init_commands(source) == [["--config", "c.yaml", "run"], ["status", "--json"],
                                            ["validate"]]


def test_a_shell_block_must_parse_and_name_real_commands_and_options():
    check_shell("engine-init fleet keygen a.pem b.pem\nengine-init validate --config x.yaml\n")
    with pytest.raises(AssertionError, match="bash -n"):
        check_shell("if true; then echo\n")
    with pytest.raises(AssertionError, match="No such option"):
        check_shell("engine-init push --registry r\n")
    with pytest.raises(AssertionError, match="No such command"):
        check_shell("engine-init publish\n")


def _block_after(page: Path, heading: str) -> str:
    text = page.read_text()
    return re.search(r"```sh\n(.*?)```", text[text.index(heading):], flags=re.S)[1]


@pytest.mark.slow
def test_the_readme_fleet_quickstart_works_copied_as_written(tmp_path):
    """Run as written in a checkout whose ``.venv`` is this interpreter: the robot's cache ends
    with the three engines promoted, none built."""
    checkout = tmp_path / "checkout"
    for folder in ("config", "tools"):
        shutil.copytree(REPO / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = checkout / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name, run in (("python", ""), ("engine-init", " -m app")):
        (venv / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{run} "$@"\n')
        (venv / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_INIT_")}
    env["PYTHONPATH"] = str(REPO)  # the package, as the editable install gives it
    block = _block_after(REPO / "README.md", "## A fleet quickstart")
    done = subprocess.run(["bash", "-e", "-c", block], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("ready: 0 built, 0 reused, 3 promoted")
    marker = json.loads((checkout / "build" / "robot" / "ready.json").read_text())
    assert [e["outcome"] for e in marker["engines"]] == ["promoted"] * 3


def _schema_keys(schema: dict, node: dict, prefix: str = "") -> set[str]:
    """Every key path of the config's JSON Schema (``backbones.keep_fp32``); a mapping of free
    names (``accuracy.outputs``) counts as its own key."""
    keys: set[str] = set()
    for name, prop in node.get("properties", {}).items():
        keys.add(prefix + name)
        refs = [prop.get("$ref"), prop.get("items", {}).get("$ref"),
                *(choice.get("$ref") for choice in prop.get("anyOf", []))]
        for ref in filter(None, refs):
            keys |= _schema_keys(schema, schema["$defs"][ref.rsplit("/", 1)[1]], f"{prefix}{name}.")
    return keys


def _document_keys(doc: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    items = doc if isinstance(doc, list) else [doc]
    for item in items:
        if isinstance(item, dict):
            for name, value in item.items():
                keys.add(prefix + name)
                if name != "outputs":  # output names are the model's, not the schema's
                    keys |= _document_keys(value, f"{prefix}{name}.")
    return keys


def test_the_configuration_page_names_every_key_of_the_schema():
    from app.config import EngineInitConfig

    schema = EngineInitConfig.model_json_schema()
    text = (REPO / "docs" / "configuration.md").read_text()
    documented = set().union(*(_document_keys(yaml.safe_load(block))
                               for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)))
    documented |= {f"backbones.{key}" for key in documented if key.startswith("accuracy.")}  # a model's own
    assert _schema_keys(schema, schema) - documented == set()


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as '-'."""
    headings = re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_to_a_page_or_heading_of_these_docs_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # another site
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert broken == []


#: A section named in prose or a comment: README "Heading", tensorrt.md: "Heading".
_SECTION_REF = re.compile(r"\b(README|[\w-]+\.md)[:,]? \"([^\"]+)\"")


def test_every_section_named_in_prose_or_a_comment_exists():
    """A section named without a link (a comment, pyproject.toml) is not checked by the link
    test: the page must have a heading that starts with the quoted words."""
    files = [REPO / "pyproject.toml", *PAGES]  # this file names its examples: left out below
    for folder in ("app", "tests", "deploy", "tools", "docker"):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".yaml", ".md", ""}
                  and p.is_file() and "__pycache__" not in p.parts and p.name != "test_doc_blocks.py"]
    stale = []
    for path in files:
        for page, section in _SECTION_REF.findall(path.read_text(errors="replace")):
            target = REPO / "README.md" if page == "README" else REPO / "docs" / page
            wanted = re.sub(r"[^\w\- ]", "", section.lower()).replace(" ", "-")
            if not target.exists() or not any(a.startswith(wanted) for a in _anchors(target)):
                stale.append(f"{path.relative_to(REPO)}: {page} \"{section}\"")
    assert stale == []


def test_every_docs_page_and_heading_a_module_points_at_exists():
    """Modules keep a few lines and point at the page that explains the rest
    (``docs/tensorrt.md#logging``): the page and the heading must exist."""
    stale = []
    for path in sorted((REPO / "app").rglob("*.py")):
        for page, anchor in re.findall(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?", path.read_text()):
            target = REPO / "docs" / page
            if not target.exists() or (anchor and anchor not in _anchors(target)):
                stale.append(f"{path.relative_to(REPO)}: docs/{page}#{anchor}")
    assert stale == []
