"""The checks that run the docs' code blocks (tests/doc_blocks.py) can fail, and every block
names a language they know."""

from __future__ import annotations

import re

import pytest

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
