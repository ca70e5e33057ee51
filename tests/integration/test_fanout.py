"""`pytest --arch=…` fan-out against the real engine and qemu, run through pytester."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_multiarch.host.binfmt import handler_disabled
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

UNAME_TEST = """
def test_uname(arch, multiarch_run):
    result = multiarch_run("{ref}", ["uname", "-m"], check=True)
    assert result.stdout.strip() == arch.info.uname
"""


@pytest.fixture
def uname_suite(pytester: pytest.Pytester, testbed: Testbed) -> pytest.Pytester:
    pytester.makepyfile(test_uname=UNAME_TEST.format(ref=testbed.ref("busybox")))
    return pytester


def test_uname_runs_on_every_requested_arch(uname_suite: pytest.Pytester) -> None:
    result = uname_suite.runpytest_subprocess("--arch=amd64,arm64,s390x", "-v", timeout=300)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "multiarch: archs=amd64,arm64,s390x (from option);*",
        "multiarch: binfmt: amd64 native, arm64 ok*, s390x ok*",
        "*test_uname?arm64? PASSED*",
    ])


def test_arm_v7_ppc64le_run_too(uname_suite: pytest.Pytester) -> None:
    result = uname_suite.runpytest_subprocess("--arch=armhf,ppc64el", timeout=300)
    result.assert_outcomes(passed=2)


@pytest.mark.serial
def test_missing_handler_skips_with_the_fix_or_fails_when_required(
    uname_suite: pytest.Pytester,
) -> None:
    with handler_disabled(Platform.parse("s390x")) as names:
        skipped = uname_suite.runpytest_subprocess("--arch=amd64,s390x", "-rs", timeout=300)
        required = uname_suite.runpytest_subprocess(
            "--arch=amd64,s390x", "--arch-required", timeout=300
        )
    skipped.assert_outcomes(passed=1, skipped=1)
    skipped.stdout.fnmatch_lines([
        "multiarch: binfmt: amd64 native, s390x MISSING",
        f"SKIPPED*s390x cannot run here: the binfmt_misc handler '{names[0]}'*is disabled;"
        f" fix: echo 1 > /proc/sys/fs/binfmt_misc/{names[0]}*",
    ])
    required.assert_outcomes(passed=1, errors=1)
    required.stdout.fnmatch_lines([
        "*failed because --arch-required is set*",
        "test_uname.py::test_uname *| PASS *| ERROR ArchUnavailable*",
    ])
    assert required.ret == pytest.ExitCode.TESTS_FAILED


def test_ssh_remote_host_runs_after_a_plain_install(
    uname_suite: pytest.Pytester, testbed: Testbed
) -> None:
    """``ssh://`` through paramiko (a main dependency, no extra), with the user's own
    ``~/.ssh/config`` (a real subprocess: pytester would replace HOME)."""
    import os
    import pwd
    import subprocess
    import sys

    url = testbed.env["DOCKER_SSH_HOST"]
    env = {**os.environ, "HOME": pwd.getpwuid(os.getuid()).pw_dir}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--arch=amd64",
         f"--arch-host=amd64={url}"],
        cwd=uname_suite.path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"multiarch: binfmt: amd64 native on {url.rsplit('@', 1)[-1]}" in done.stdout
    assert "1 passed" in done.stdout
    assert "ModuleNotFoundError" not in done.stdout + done.stderr
