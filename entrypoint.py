#!/usr/bin/env python3
"""Container entry point: the same CLI as the ``engine-init`` console script."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
