"""Hooks other plugins and conftest files can implement.

Each is prefixed ``pytest_multiarch_``; selectors are ``firstresult`` like xdist's
``pytest_xdist_make_scheduler``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_multiarch.platforms import Platform
    from pytest_multiarch.runners.base import Runner


@pytest.hookspec(firstresult=True)
def pytest_multiarch_make_runner(config: pytest.Config, platform: Platform) -> Runner | None:
    """Return the runner that executes containers for *platform*, or None for the default."""


@pytest.hookspec(firstresult=True)
def pytest_multiarch_select_archs(
    config: pytest.Config, archs: tuple[Platform, ...]
) -> tuple[Platform, ...] | None:
    """Return a replacement for the requested architectures, or None to keep them."""


@pytest.hookspec
def pytest_multiarch_report(config: pytest.Config, report: dict[str, Any]) -> None:
    """Amend the JSON report (``--multiarch-report``) before it is written."""
