"""The generated gate (`pytest --multiarch-image=REF`) against the real corpus, via pytester."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed


ALL = "amd64,arm64,s390x,ppc64le,arm/v7"


def gate(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--arch-required", *args,
                                         timeout=600)


def test_good_image_passes_every_check_on_every_arch(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    result = gate(pytester, f"--multiarch-image={testbed.ref('busybox')}", f"--arch={ALL}",
                  f"--multiarch-report={report}")
    result.assert_outcomes(passed=7 * 5)
    result.stdout.fnmatch_lines(["*multiarch matrix*", "totals *| 7 passed *| 7 passed*"])
    doc = json.loads(report.read_text())
    per_arch = doc["images"][testbed.ref("busybox")]
    for plat, digest in testbed.corpus["busybox"]["digests"].items():
        arch = plat.removeprefix("linux/")
        assert per_arch[arch]["digest"] == digest, arch
        assert {c["outcome"] for c in per_arch[arch]["checks"]} == {"passed"}


def test_oci_layout_is_gated_like_a_registry_image(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    layout = testbed.env["OCI_LAYOUT"]
    result = gate(pytester, f"--multiarch-image=oci:{layout}", "--arch=amd64,arm64")
    result.assert_outcomes(passed=14)


def test_missing_arch_fails_with_what_the_index_has(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('partial')}", "--arch=amd64,s390x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=7, failed=1, skipped=6)
    result.stdout.fnmatch_lines([
        f"no linux/s390x in index {testbed.ref('partial')} (sha256:*); "
        "it has linux/a*64, linux/a*64*",
    ])


def test_index_entry_whose_config_lies_fails_the_config_check(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('config-lies')}", "--arch=arm64")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"index entry of {testbed.ref('config-lies')} for linux/arm64 points at sha256:* "
        "whose config says linux/amd64*",
    ])


def test_mislabeled_arm64_variant_fails_the_audit_as_host_native_only(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('mislabeled')}", "--arch=amd64,arm64")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*is x86-64 (EM_X86_64, 64-bit LE); this would fail with exec format error on arm64*",
        "*host-native-only suspicious*",
        "*mislabeled:1 binaries *| PASS *| FAIL AuditFailed*",
    ])
    # The emulated smoke run passes: the amd64 binary runs natively here. Only the audit sees it.
    result.stdout.fnmatch_lines(["*mislabeled:1 smoke *| PASS *| PASS*"])


def test_corrupted_blob_in_registry_storage_fails(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('corrupt')}", "--arch=arm64",
                  "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*corrupt:1 binaries *| FAIL*"])
    assert "digest" in result.stdout.str().lower()


def test_foreign_helper_needs_the_allowlist(pytester: pytest.Pytester, testbed: Testbed) -> None:
    ref = testbed.ref("foreign-helper")
    refused = gate(pytester, f"--multiarch-image={ref}", "--arch=arm64", "-k", "binaries")
    refused.assert_outcomes(failed=1, deselected=6)
    refused.stdout.fnmatch_lines(["*/opt/helpers/x86-tool*"])
    allowed = gate(pytester, f"--multiarch-image={ref}", "--arch=arm64", "-k", "binaries",
                   "--multiarch-allow=/opt/helpers/*")
    allowed.assert_outcomes(passed=1, deselected=6)


def test_credentials_never_show_in_output_or_report(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", testbed.env["AUTH_REGISTRY_DOCKER_CONFIG"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", testbed.env["AUTH_REGISTRY_CA"])
    report = tmp_path / "r.json"
    ref = f"{testbed.auth_registry}/corpus/busybox:1"
    result = gate(pytester, f"--multiarch-image={ref}", "--arch=amd64,arm64", "-vv",
                  f"--multiarch-report={report}", "-k", "not smoke")
    result.assert_outcomes(passed=12, deselected=2)
    everything = result.stdout.str() + result.stderr.str() + report.read_text()
    assert testbed.auth_password not in everything
    import base64

    token = base64.b64encode(f"{testbed.auth_user}:{testbed.auth_password}".encode()).decode()
    assert token not in everything


def test_wrong_credentials_fail_clearly_without_leaking(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    secret = "not-the-password-123"
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"tester:{secret}".encode()).decode()
    auths = {"auths": {testbed.auth_registry: {"auth": auth}}}
    (config / "config.json").write_text(json.dumps(auths))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", testbed.env["AUTH_REGISTRY_CA"])
    result = gate(pytester, f"--multiarch-image={testbed.auth_registry}/corpus/busybox:1",
                  "--arch=amd64", "-k", "platform", "-vv")
    result.assert_outcomes(failed=1, deselected=6)
    out = result.stdout.str()
    assert secret not in out
    assert auth not in out
    result.stdout.fnmatch_lines(["*401*" if "401" in out else "*credentials*"])


def test_missing_loader_fails_the_smoke_check_as_loader_missing(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('missing-loader')}", "--arch=arm64",
                  "-k", "smoke")
    result.assert_outcomes(failed=1, deselected=6)
    result.stdout.fnmatch_lines([
        "*/usr/bin/hello is dynamically linked and asks for the loader /lib/ld-linux-aarch64.so.1,"
        " which is not in the image*: the default command cannot start (this is not the "
        "application failing)*",
        "*missing-loader:1 smoke *| FAIL LoaderMissing*",
    ])
    assert "the command ran, so this is the application failing" not in result.stdout.str()


def test_corrupt_layer_in_the_smoke_check_is_a_digest_mismatch(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('corrupt')}", "--arch=arm64",
                  "-k", "smoke")
    result.assert_outcomes(failed=1, deselected=6)
    result.stdout.fnmatch_lines([
        "*refused a layer of *corrupt@sha256:* for linux/arm64: filesystem layer verification "
        "failed for digest sha256:*. A blob in the registry does not hash to its digest*",
        "*corrupt:1 smoke *| FAIL DigestMismatchError*",
    ])


def test_a_service_that_stays_up_passes_the_smoke_check_in_bounded_time(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    import time

    started = time.monotonic()
    result = gate(pytester, f"--multiarch-image={testbed.ref('busybox')}", "--arch=amd64,arm64",
                  "-k", "smoke", "--multiarch-smoke-cmd=sleep 600",
                  "--multiarch-smoke-timeout=1")
    result.assert_outcomes(passed=2, deselected=12)
    result.stdout.fnmatch_lines([
        f"multiarch: smoke of {testbed.ref('busybox')} [[]amd64[]]: still running after 1s (1s x "
        "emulation 1.0), counted as a service that started and stays up; give "
        "--multiarch-smoke-cmd for a command that exits",
    ])
    result.stdout.fnmatch_lines(["*[[]arm64[]]: still running after *s (1s x emulation *"])
    # 1 s times the emulation factor per arch, plus pulls: nowhere near the old 300 s per arch
    assert time.monotonic() - started < 120


def test_a_command_that_exits_non_zero_still_fails_the_smoke_check(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('busybox')}", "--arch=amd64",
                  "-k", "smoke", "--multiarch-smoke-cmd=sh -c 'exit 3'",
                  "--multiarch-smoke-timeout=30")
    result.assert_outcomes(failed=1, deselected=6)
    result.stdout.fnmatch_lines(["*exited 3 after *", "*smoke *| FAIL CommandFailed*"])


def test_gate_only_collects_no_test_files(pytester: pytest.Pytester, testbed: Testbed) -> None:
    pytester.makepyfile(test_local="def test_would_fail():\n    assert False\n")
    pytester.makepyfile(test_broken="import no_such_module_here\n")
    ref = testbed.ref("busybox")
    mixed = gate(pytester, f"--multiarch-image={ref}", "--arch=amd64", "-k", "platform or local")
    assert mixed.ret != pytest.ExitCode.OK  # without the flag the directory's tests run too
    alone = gate(pytester, f"--multiarch-image={ref}", "--arch=amd64", "--multiarch-gate-only")
    alone.assert_outcomes(passed=7)
    assert "test_local" not in alone.stdout.str()
    assert "no_such_module_here" not in alone.stdout.str()
    named = gate(pytester, f"--multiarch-image={ref}", "--arch=amd64", "--multiarch-gate-only",
                 "test_local.py")  # a path named on the command line is not run either
    named.assert_outcomes(passed=7, deselected=1)


def test_variant_mismatch_message_says_what_to_run_without_internal_names(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('buildah-slip')}", "--arch=arm64",
                  "-k", "smoke")
    result.assert_outcomes(failed=1, deselected=6)
    result.stdout.fnmatch_lines([
        "*the engine's copy of *buildah-slip@sha256:* is linux/amd64, not linux/arm64*Run the "
        "linux/arm64 variant by its own manifest digest (the linux/arm64 entry of the index), "
        "not the index digest or a tag.",
    ])
    assert "resolve()" not in result.stdout.str()


def test_service_note_reaches_the_summary_under_xdist(
    pytester: pytest.Pytester, testbed: Testbed
) -> None:
    result = gate(pytester, f"--multiarch-image={testbed.ref('busybox')}", "--arch=amd64,arm64",
                  "-k", "smoke", "--multiarch-smoke-cmd=sleep 600",
                  "--multiarch-smoke-timeout=1", "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*[[]amd64[]]: still running after 1s*"])
    result.stdout.fnmatch_lines(["*[[]arm64[]]: still running after *"])
