"""``python -m app``: the engine-init CLI."""

import sys

from app.cli import main

sys.exit(main())
