"""``python -m app``: the engine-init CLI."""

import sys

from app.boot import main

sys.exit(main())
