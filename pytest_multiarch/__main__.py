"""``python -m pytest_multiarch merge …``: the same as the ``pytest-multiarch`` console script."""

from __future__ import annotations

import sys

from pytest_multiarch.cli import main

if __name__ == "__main__":
    sys.exit(main())
