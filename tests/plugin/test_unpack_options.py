"""``--multiarch-unpack-max-bytes`` / ``-files``: precedence, header, and usage errors."""

from __future__ import annotations

import pytest
from plugin_types import ExpectUsageError


def test_option_beats_env_beats_ini_and_the_header_says_so(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    project.makeini("[pytest]\nmultiarch_unpack_max_bytes = 1g\nmultiarch_unpack_max_files = 7\n")
    monkeypatch.setenv("PYTEST_MULTIARCH_UNPACK_MAX_BYTES", "2g")
    result = project.runpytest("--multiarch-unpack-max-bytes=512mb", "--co")
    result.stdout.fnmatch_lines(["*unpack_max_bytes=536870912 (from option); "
                                 "unpack_max_files=7 (from ini multiarch_unpack_max_files)*"])
    result = project.runpytest("--co")
    result.stdout.fnmatch_lines(
        ["*unpack_max_bytes=2147483648 (from env PYTEST_MULTIARCH_UNPACK_MAX_BYTES)*"])


@pytest.mark.parametrize(("args", "message"), [
    (["--multiarch-unpack-max-bytes=lots"],
     "*--multiarch-unpack-max-bytes='lots' (option): expected a size such as 64g or 500m*"),
    (["--multiarch-unpack-max-bytes=0"], "*--multiarch-unpack-max-bytes='0' (option)*"),
    (["--multiarch-unpack-max-files=-3"],
     "*--multiarch-unpack-max-files='-3' (option): expected 2000000*"),
])
def test_bad_values_are_usage_errors(usage_error: ExpectUsageError, args: list[str],
                                     message: str) -> None:
    usage_error(*args).stderr.fnmatch_lines([f"*pytest-multiarch: {message[1:]}"])
