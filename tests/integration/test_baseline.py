"""Regression mode against a real registry: rebuild one arch's variant, see exactly that arch."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def copy_variant(testbed: Testbed, source: str, repo: str, tag: str) -> tuple[str, int, str]:
    """Copy one single-platform manifest into *repo*, keeping its digest; return descriptor."""
    target = f"{testbed.registry}/{repo}:{tag}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
         "--dest-tls-verify=false", f"docker://{source}", f"docker://{target}"],
        check=True, capture_output=True, timeout=120,
    )
    answer = requests.get(
        f"http://{testbed.registry}/v2/{repo}/manifests/{tag}", timeout=10,
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"], len(answer.content), answer.headers[
        "Content-Type"
    ]


def push_index(testbed: Testbed, repo: str, tag: str,
               children: dict[str, tuple[str, int, str]]) -> None:
    index = {"schemaVersion": 2, "mediaType": LIST, "manifests": [
        {"mediaType": media, "digest": digest, "size": size,
         "platform": {"os": "linux", "architecture": arch}}
        for arch, (digest, size, media) in children.items()
    ]}
    answer = requests.put(
        f"http://{testbed.registry}/v2/{repo}/manifests/{tag}", data=json.dumps(index),
        headers={"Content-Type": LIST}, timeout=10,
    )
    answer.raise_for_status()


def test_rebuilt_variant_is_the_only_change_and_the_only_rerun(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path
) -> None:
    repo = f"scratch-baseline/app-{uuid.uuid4().hex[:8]}"
    good = testbed.corpus["busybox"]["digests"]
    other = testbed.corpus["foreign-helper"]["digests"]
    busybox = f"{testbed.registry}/{testbed.corpus['busybox']['repository']}"
    helper = f"{testbed.registry}/{testbed.corpus['foreign-helper']['repository']}"
    amd64 = copy_variant(testbed, f"{busybox}@{good['linux/amd64']}", repo, "amd64")
    arm64_v1 = copy_variant(testbed, f"{busybox}@{good['linux/arm64']}", repo, "arm64-v1")
    push_index(testbed, repo, "1", {"amd64": amd64, "arm64": arm64_v1})

    ref = f"{testbed.registry}/{repo}:1"
    baseline = tmp_path / "baseline.json"
    args = [f"--multiarch-image={ref}", "--arch=amd64,arm64", "-k", "not binaries",
            f"--multiarch-baseline={baseline}", "-p", "no:cacheprovider"]
    first = pytester.runpytest_subprocess(*args, timeout=300)
    first.assert_outcomes(passed=12, deselected=2)
    recorded = json.loads(baseline.read_text())["images"][ref]["variants"]
    assert recorded["arm64"]["digest"] == arm64_v1[0]

    # "Rebuild" arm64 only: the index now points at another arm64 image.
    arm64_v2 = copy_variant(testbed, f"{helper}@{other['linux/arm64']}", repo, "arm64-v2")
    push_index(testbed, repo, "1", {"amd64": amd64, "arm64": arm64_v2})

    second = pytester.runpytest_subprocess(*args, "--multiarch-changed-only", "-v",
                                           timeout=300)
    second.assert_outcomes(passed=6, deselected=8)
    out = second.stdout.str()
    assert "::platform[arm64] PASSED" in out
    assert "[amd64] PASSED" not in out
    second.stdout.fnmatch_lines([
        f"multiarch: --multiarch-changed-only: changed or failing variants: {ref} [[]arm64[]]; "
        "7 test(s) deselected",
        "multiarch baseline: compared with *: * change(s)",
        f"  {ref} [[]arm64[]]: new digest * -> *",
    ])
    assert f"{ref} [amd64]: new digest" not in out


def test_a_broken_variant_is_reported_until_it_is_fixed(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path
) -> None:
    """pass -> break -> changed-only -> changed-only again -> fixed -> nothing to re-test."""
    repo = f"scratch-glue-baseline/app-{uuid.uuid4().hex[:8]}"
    good = testbed.corpus["busybox"]["digests"]
    bad = testbed.corpus["mislabeled"]["digests"]
    busybox = f"{testbed.registry}/{testbed.corpus['busybox']['repository']}"
    mislabeled = f"{testbed.registry}/{testbed.corpus['mislabeled']['repository']}"
    amd64 = copy_variant(testbed, f"{busybox}@{good['linux/amd64']}", repo, "amd64")
    arm64_good = copy_variant(testbed, f"{busybox}@{good['linux/arm64']}", repo, "arm64-good")
    arm64_bad = copy_variant(testbed, f"{mislabeled}@{bad['linux/arm64']}", repo, "arm64-bad")
    ref = f"{testbed.registry}/{repo}:1"
    baseline = tmp_path / "baseline.json"
    args = [f"--multiarch-image={ref}", "--arch=amd64,arm64", "--multiarch-gate-only",
            f"--multiarch-baseline={baseline}", "-p", "no:cacheprovider", "-k", "not smoke"]

    push_index(testbed, repo, "1", {"amd64": amd64, "arm64": arm64_good})
    pytester.runpytest_subprocess(*args, timeout=300).assert_outcomes(passed=12, deselected=2)

    push_index(testbed, repo, "1", {"amd64": amd64, "arm64": arm64_bad})  # the base moved: broken
    for attempt in range(2):  # the regression is reported again, not learned as the new normal
        broken = pytester.runpytest_subprocess(*args, "--multiarch-changed-only", timeout=300)
        assert broken.ret == pytest.ExitCode.TESTS_FAILED, attempt
        broken.assert_outcomes(passed=5, failed=1, deselected=8)
        broken.stdout.fnmatch_lines([
            f"multiarch: --multiarch-changed-only: changed or failing variants: {ref} "
            "[[]arm64[]]; 7 test(s) deselected",
            f"  {ref} [[]arm64[]]: new digest * -> *",
            f"  {ref} [[]arm64[]]: {'REGRESSION' if attempt == 0 else 'STILL FAILING'}: {ref} "
            "binaries *",
            "multiarch baseline: not learned (failing, kept selected for --multiarch-changed-only"
            f" until they pass): {ref} [[]arm64[]]",
        ])
        recorded = json.loads(baseline.read_text())["images"][ref]["variants"]["arm64"]
        assert recorded["digest"] == arm64_good[0], "the last good digest is kept"

    push_index(testbed, repo, "1", {"amd64": amd64, "arm64": arm64_good})  # fixed
    fixed = pytester.runpytest_subprocess(*args, "--multiarch-changed-only", timeout=300)
    assert fixed.ret == pytest.ExitCode.OK
    fixed.assert_outcomes(passed=6, deselected=8)

    quiet = pytester.runpytest_subprocess(*args, "--multiarch-changed-only", timeout=300)
    assert quiet.ret == pytest.ExitCode.OK
    quiet.assert_outcomes(deselected=14)
    quiet.stdout.fnmatch_lines([
        "multiarch: --multiarch-changed-only: nothing changed since the baseline, nothing to "
        "re-test (exit 0)",
    ])
