#!/usr/bin/env python3
"""Container entry point: the same CLI as ``python -m app`` and the ``engine-init`` script."""

import sys

from app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
