"""``python -m app``, the ``engine-init`` script and the image's ``entrypoint.py``: the CLI.

The signal handlers go in before the CLI's imports (docs/failures.md#a-signal-before-the-job-starts).
Start-up makes ~50,000 long-lived objects and little garbage: the collector stays off until the
config is loaded or a fleet command starts (:func:`app.commands.end_startup`), ~10 ms saved.
Pydantic plugins are not looked for (that reads every installed distribution's metadata)."""

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
