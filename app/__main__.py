"""``python -m app``, the ``engine-init`` script and the image's ``entrypoint.py``: the CLI.

A signal must find the job's handlers (a clean exit 130/143) from as early as possible, so
they go in before the CLI's imports (click, logging, the job's modules: tens of ms). Before
this module runs the interpreter is starting (docs/failures.md, "A signal before the job starts").

Start-up (click, pydantic building the config's models, the YAML) makes some 50,000 tracked
objects that live as long as the process, and little garbage (a few hundred, kept): the collector
is off until the config is loaded (:meth:`app.commands.State.config` then freezes what exists and
turns it back on; the short commands that read no config, such as ``schema`` and the fleet's
key tools, end without it), which saves ``validate`` a collection or two, about 10 ms. Nor are
pydantic plugins looked for: finding them reads the metadata of every installed distribution,
and the job has none."""

import gc
import os
import sys

from app.cancel import install_signal_handlers


def main() -> int:
    install_signal_handlers()
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from app.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
