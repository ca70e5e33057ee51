"""Types of the fixtures in tests/plugin/conftest.py, for the test modules' annotations.

Here and not in conftest: with four ``conftest`` modules in the tree, ``import conftest`` would be
whichever was imported first.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

#: The ``usage_error`` fixture: run the project with these arguments, assert a usage error.
ExpectUsageError = Callable[..., pytest.RunResult]
