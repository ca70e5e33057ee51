"""What the pytester tests share: a project to run, and running it into one clean usage error."""

from __future__ import annotations

from collections.abc import Callable

import pytest

ARCH_TEST = """
def test_uname(arch):
    print("ARCH", arch)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> pytest.Pytester:
    """pytester's directory holding the test module's ``PROJECT`` files (name → source).

    A module without ``PROJECT`` gets ``test_a.py`` with one arch-parametrized ``test_uname``.
    """
    pytester.makepyfile(**getattr(request.module, "PROJECT", {"test_a": ARCH_TEST}))
    return pytester


@pytest.fixture
def usage_error(project: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """``usage_error(*args)``: run the project; check it stopped on a usage error, no traceback."""

    def run(*args: str) -> pytest.RunResult:
        result = project.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
        assert "Traceback" not in result.stderr.str() + result.stdout.str()
        return result

    return run
