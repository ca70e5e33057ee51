"""Regression mode through pytester: the exit code and the lines a CI step sees.

These runs use the user's own arch-parametrized tests (no image), so they need no test bed; the
same sequence against a real registry is in tests/integration/test_baseline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SUITE = """
import os
def test_flaky_on_arm(arch):
    assert not (arch.architecture == "arm64" and os.environ.get("BREAK_ARM"))
"""
PROJECT = {"test_b": SUITE}


def run(project: pytest.Pytester, baseline: Path, *args: str) -> pytest.RunResult:
    return project.runpytest("--arch=amd64,arm64", f"--multiarch-baseline={baseline}",
                             "-p", "no:cacheprovider", *args)


def test_pass_break_changed_only_twice_then_fixed_then_nothing_to_do(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = tmp_path / "baseline.json"
    run(project, baseline).assert_outcomes(passed=2)

    monkeypatch.setenv("BREAK_ARM", "1")
    broken = run(project, baseline)
    broken.assert_outcomes(passed=1, failed=1)
    broken.stdout.fnmatch_lines([
        "*REGRESSION: test_b.py::test_flaky_on_arm passed before, failed now",
        "multiarch baseline: not learned (failing, kept selected for --multiarch-changed-only "
        "until they pass): (tests) [[]arm64[]]",
    ])
    recorded = json.loads(baseline.read_text())["images"]["(tests)"]["variants"]
    assert recorded["arm64"]["failing"] == ["test_b.py::test_flaky_on_arm"]

    # The failure is not the new normal: changed-only keeps running arm64, run after run.
    for _ in range(2):
        again = run(project, baseline, "--multiarch-changed-only")
        assert again.ret == pytest.ExitCode.TESTS_FAILED
        again.assert_outcomes(failed=1, deselected=1)
        again.stdout.fnmatch_lines(["*STILL FAILING: test_b.py::test_flaky_on_arm failed*"])

    monkeypatch.delenv("BREAK_ARM")
    fixed = run(project, baseline, "--multiarch-changed-only")
    fixed.assert_outcomes(passed=1, deselected=1)
    assert json.loads(baseline.read_text())["images"]["(tests)"]["variants"]["arm64"][
        "failing"] == []

    quiet = run(project, baseline, "--multiarch-changed-only")
    assert quiet.ret == pytest.ExitCode.OK, "nothing changed is a success, not 'no tests ran'"
    quiet.assert_outcomes(deselected=2)
    quiet.stdout.fnmatch_lines([
        "multiarch: --multiarch-changed-only: nothing changed since the baseline, nothing to "
        "re-test (exit 0)",
    ])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (json.dumps({"format": 1, "images": {"r": [1]}}).encode(),
         "is malformed: images['r'] is a list, expected an object"),
        (json.dumps({"format": 1, "images": {"r": {"variants": {"arm64": {"digest": 5}}}}})
         .encode(), "is malformed: images['r'][\"variants\"]['arm64']['digest'] is a number"),
        (b"\xff\xfe{\"format\": 1}", "is not UTF-8 text (byte 0)"),
        (b"{not json", "is not valid JSON (line 1: "),
        (json.dumps({"format": 7, "images": {}}).encode(), "has format 7, this version reads"),
        (json.dumps([1, 2]).encode(), "is not a pytest-multiarch baseline"),
        (b"[" * 100_000, "is not valid JSON"),  # or nested too deeply: either is named
    ],
)
@pytest.mark.parametrize("changed_only", [False, True])
def test_unusable_baseline_is_named_never_overwritten_never_a_traceback(
    project: pytest.Pytester, tmp_path: Path, content: bytes, problem: str, changed_only: bool
) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(content)
    result = run(project, baseline, *(["--multiarch-changed-only"] if changed_only else []))
    result.assert_outcomes(passed=2)  # the run itself goes on, everything selected
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out
    assert "INTERNALERROR" not in out
    said = [line for line in result.stdout.lines
            if line.startswith(f"multiarch baseline: baseline {baseline} ")]
    assert len(said) == 1, result.stdout.str()
    if "nested" not in said[0]:
        assert problem in said[0]
    assert said[0].endswith("; comparison skipped and the file is left as it is (move or "
                            "delete it to record a new baseline)")
    if changed_only:
        result.stdout.fnmatch_lines(["multiarch: --multiarch-changed-only ignored: baseline *"])
    assert baseline.read_bytes() == content, "an unusable baseline must not be overwritten"


def test_nothing_changed_is_exit_0_under_xdist_too(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline.json"
    run(project, baseline).assert_outcomes(passed=2)
    quiet = project.runpytest_subprocess("--arch=amd64,arm64", f"--multiarch-baseline={baseline}",
                                         "-p", "no:cacheprovider", "--multiarch-changed-only",
                                         "-n", "2", timeout=120)
    assert quiet.ret == pytest.ExitCode.OK
    quiet.stdout.fnmatch_lines(["*nothing changed since the baseline, nothing to re-test*"])
