"""The process entry point: the ``engine-init`` script, ``python -m app`` and the image's
``entrypoint.py``.

Before the CLI loads (click, pydantic-core and the job's modules: about 0.1 s of a warm boot),
``run`` starts hashing the engines the previous run used (:mod:`app.cache.warm`), so that the
loading and the hashing overlap. Only the config's ``cache_root`` is read for that, without
validation and without PyYAML: from a top-level ``cache_root:`` line, else the default (a wrong
guess costs time, never a wrong reuse); the CLI then parses and validates everything as usual.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Options of the top-level group that take a value (see app.cli); what follows them is not a
# command name.
_VALUED = ("--config", "--log-format")


def _run_config(args: Sequence[str]) -> tuple[bool, str | None]:
    """Whether ``args`` ask for ``run``, and the ``--config`` they give (None: not given)."""
    config: str | None = None
    it = iter(args)
    for arg in it:
        if arg in _VALUED:
            value = next(it, None)
            config = value if arg == "--config" else config
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg == "--" or not arg.startswith("-"):
            return (next(it, None) if arg == "--" else arg) == "run", config
    return False, config


def main(argv: list[str] | None = None) -> int:
    from app.cancel import install_signal_handlers
    from app.errors import BuildCancelledError

    args = sys.argv[1:] if argv is None else argv
    try:
        # From the first moment: SIGTERM/SIGINT become a clean exit 143/130 with a message
        # (inside the try: a signal may arrive as soon as the first handler is in).
        install_signal_handlers()
        wants_run, config = _run_config(args)
        if wants_run:
            from app.cache import warm
            from app.config_file import path_hint

            cache_root = path_hint("cache_root", config, scan_only=True)
            if cache_root is not None:
                warm.start(cache_root)
        from app.cli import main as cli_main
    except BuildCancelledError as exc:  # stopped while loading: nothing was written yet
        from app.cli import fail

        return fail(exc, args, exit_now=argv is None)
    code = cli_main(argv)
    if argv is None:
        # The process ends now: spare the interpreter's last garbage collections the walk over
        # every object of every loaded module (measured: 20-25 ms of each exit, 5 ms after).
        gc.freeze()
    return code
