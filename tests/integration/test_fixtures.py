"""The public fixtures as a user's conftest-free test file uses them, against the real corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

USER_TESTS = '''
import pytest

GOOD = {good!r}
HELPER = {helper!r}
MISSING_LOADER = {missing_loader!r}


def test_image_is_the_arch_variant_by_digest(arch, multiarch_image):
    resolved = multiarch_image(GOOD)
    assert resolved.pinned.endswith("@" + resolved.digest)
    assert resolved.config["architecture"] == arch.architecture
    assert resolved.layers


def test_good_image_has_no_findings(multiarch_audit):
    result = multiarch_audit(GOOD)
    assert result.ok, result.format()


@pytest.mark.archs("arm64")
@pytest.mark.multiarch_allow("/opt/helpers/*")
def test_marker_allowlists_the_helper(multiarch_audit):
    assert multiarch_audit(HELPER).ok


@pytest.mark.archs("arm64")
def test_helper_without_allowlist_is_a_finding(multiarch_audit):
    result = multiarch_audit(HELPER)
    assert not result.ok
    assert any("/opt/helpers/x86-tool" in f.message for f in result.failures)


@pytest.mark.archs("arm64")
def test_missing_loader_is_predicted(multiarch_audit):
    result = multiarch_audit(MISSING_LOADER)
    assert "no such file or directory" in result.format()


def test_run_and_container(arch, multiarch_run, multiarch_container):
    assert multiarch_run(GOOD, ["uname", "-m"], check=True).stdout.strip() == arch.info.uname
    box = multiarch_container(GOOD, cmd=["sleep", "60"])
    assert box.exec(["echo", "ok"]).stdout == "ok\\n"


def test_failing_command_shows_its_class(multiarch_run):
    multiarch_run(GOOD, ["sh", "-c", "echo broken >&2; exit 3"], check=True)


@pytest.mark.archs("arm64")
def test_failure_gets_the_container_log(multiarch_container):
    box = multiarch_container(GOOD, cmd=["sh", "-c", "echo service-said-hello; sleep 60"])
    box.exec(["true"])
    assert False, "the service misbehaved"
'''


def test_user_fixtures(pytester: pytest.Pytester, testbed: Testbed) -> None:
    pytester.makepyfile(test_user=USER_TESTS.format(
        good=testbed.ref("busybox"), helper=testbed.ref("foreign-helper"),
        missing_loader=testbed.ref("missing-loader"),
    ))
    result = pytester.runpytest_subprocess("--arch=amd64,arm64", "--arch-required",
                                           "-p", "no:cacheprovider", timeout=600)
    # 3 tests x 2 archs + 3 arm64-only + the failing command on both archs
    result.assert_outcomes(passed=9, failed=3)
    result.stdout.fnmatch_lines([
        "*Captured container log*",
        "*service-said-hello*",
    ])
    result.stdout.fnmatch_lines([
        "*exited 3 after *broken*this is the application failing on this architecture*",
        "*_command_shows_its_class *| FAIL CommandFailed *| FAIL CommandFailed*",
    ])
