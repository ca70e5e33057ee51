"""Options of the index, attestations and packages checks: precedence, header, bad values."""

from __future__ import annotations

import pytest
from plugin_types import ExpectUsageError

PROJECT = {"test_a": "def test_a(multiarch_config):\n    print(multiarch_config)\n"}

def test_option_beats_env_beats_ini_and_the_header_says_which(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makeini("[pytest]\nmultiarch_expect_platforms = linux/amd64\n"
                    "multiarch_require_attestations = provenance\n")
    monkeypatch.setenv("PYTEST_MULTIARCH_REQUIRE_ATTESTATIONS", "sbom,signature")
    result = project.runpytest("--multiarch-expect-platforms=amd64,arm64")
    result.stdout.fnmatch_lines([
        "multiarch: expect-platforms=linux/amd64,linux/arm64 (from option); "
        "require-attestations=sbom,signature (from env PYTEST_MULTIARCH_REQUIRE_ATTESTATIONS)",
    ])
    assert result.ret == 0


def test_without_the_options_nothing_is_said_or_expected(project: pytest.Pytester) -> None:
    result = project.runpytest("-s")
    assert "expect-platforms" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*expect_platforms_from=None*require_attestations_from=None*"])


@pytest.mark.parametrize(("arg", "message"), [
    ("--multiarch-require-attestations=provenance,sboms",
     "*--multiarch-require-attestations='provenance,sboms' (option): sboms is not valid; "
     "valid: provenance, sbom, signature"),
    ("--multiarch-require-attestations=,", "*(option): empty is not valid; valid: provenance*"),
    ("--multiarch-expect-platforms=linux/amd64,linux/vax",
     "*--multiarch-expect-platforms (option): *vax*"),
    ("--multiarch-expect-platforms=,", "*--multiarch-expect-platforms (option) is empty*"),
])
def test_bad_values_are_usage_errors(usage_error: ExpectUsageError, arg: str,
                                     message: str) -> None:
    usage_error(arg).stderr.fnmatch_lines([f"ERROR: pytest-multiarch: {message.lstrip('*')}"
                                           if not message.startswith("*")
                                           else f"ERROR: {message}"])


def test_marker_is_registered(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.multiarch_allow_packages(*globs): *"])
