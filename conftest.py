"""Every code block of README.md and docs/*.md runs in the tests (Sybil); what running means
for each language, and how a block opts out: tests/doc_blocks.py."""

from __future__ import annotations

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from tests.doc_blocks import check_shell, check_yaml

pytest_collect_file = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        CodeBlockParser("yaml", lambda example: check_yaml(example.parsed)),
        CodeBlockParser("sh", lambda example: check_shell(example.parsed)),
        SkipParser(),
    ],
    filenames=["README.md"],
    patterns=["docs/*.md"],
).pytest()
