"""``python -m app``, the ``engine-init`` script and the image's ``entrypoint.py``: the CLI.

A signal must find the job's handlers (a clean exit 130/143) from as early as possible, so
they go in before the CLI's imports (click, logging, the job's modules: tens of ms). Before
this module runs the interpreter is starting (docs/failures.md, "A signal before the job starts")."""

import sys

from app.cancel import install_signal_handlers


def main() -> int:
    install_signal_handlers()
    from app.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
