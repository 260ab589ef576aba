"""The commands beside ``run`` (:mod:`app.cli`), one module per area: :mod:`.cache` (validate,
status, verify, prune, wait-ready, schema), :mod:`.fleet` (export, import, push, pull, fleet
keygen) and :mod:`.fleet_trust` (fleet trust ...).

This is the command layer: only :mod:`app.cli` imports it, never a library package (the
``layers`` contract in pyproject.toml): the library works, and is tested, without the CLI.
"""

from __future__ import annotations

import click

from app.commands import cache, fleet


def register(group: click.Group) -> None:
    cache.register(group)
    fleet.register(group)
