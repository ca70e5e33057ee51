"""The arch matrix, the JSON report, JUnit properties and baselines, through pytester."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SUITE = """
import pytest

def test_ok(arch):
    pass

def test_broken_on_arm(arch):
    assert arch.architecture != "arm64", "arm64 answer differs"

@pytest.mark.xfail_arch("amd64", reason="known")
def test_known(arch):
    assert arch.architecture != "amd64"

@pytest.mark.archs("amd64")
def test_amd64_only(arch):
    pass
"""
PROJECT = {"test_suite": SUITE}


def test_terminal_matrix(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=amd64,arm64", "-p", "no:randomly")
    result.assert_outcomes(passed=5, failed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*= multiarch matrix =*",
        "test *| amd64*| arm64*",
        "test_suite.py::test_ok *| PASS *| PASS*",
        "test_suite.py::test_broken_on_arm *| PASS *| FAIL AssertionError*",
        "test_suite.py::test_known *| xfail *| PASS*",
        "test_suite.py::test_amd64_only *| PASS *| -*",
        "totals *| 3 passed, 1 xfailed *| 2 passed, 1 failed*",
        "amd64: native, *s in its tests (setup, call and teardown)",
        "arm64: emulated*, *s in its tests*",
    ])


def test_json_report(project: pytest.Pytester, tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "report.json"
    project.runpytest("--arch=amd64,arm64", f"--multiarch-report={target}")
    doc = json.loads(target.read_text())
    assert doc["format"] == 2
    assert doc["schema"] == "pytest-multiarch-report"
    assert doc["archs"]["arm64"]["how"] == "emulated"
    assert doc["archs"]["amd64"]["totals"] == {"passed": 3, "xfailed": 1}
    checks = {c["test"]: c for c in doc["images"]["(tests)"]["arm64"]["checks"]}
    assert checks["test_suite.py::test_broken_on_arm"]["outcome"] == "failed"
    assert checks["test_suite.py::test_broken_on_arm"]["failure_class"] == "AssertionError"
    assert "arm64 answer differs" in checks["test_suite.py::test_broken_on_arm"]["message"]
    assert doc["host"]["machine"]
    assert "qemu" in doc


def test_report_path_that_cannot_be_created_is_a_clear_line(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = project.runpytest("--arch=amd64", f"--multiarch-report={blocker}/report.json")
    result.stdout.fnmatch_lines([f"multiarch: could not write report {blocker}/report.json: *"])
    assert "Traceback" not in result.stdout.str()


def test_junit_gets_arch_properties(project: pytest.Pytester, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    project.runpytest("--arch=amd64,arm64", f"--junitxml={junit}")
    cases = ET.parse(junit).getroot().iter("testcase")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in cases
    }
    assert props["test_ok[arm64]"]["arch"] == "arm64"
    assert props["test_ok[amd64]"]["arch"] == "amd64"
    assert props["test_broken_on_arm[arm64]"]["failure_class"] == "AssertionError"


def test_baseline_reports_regressions_and_survives_bad_files(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = tmp_path / "baseline.json"
    pytester.makepyfile(test_b="""
        import os
        def test_flaky_on_arm(arch):
            assert not (arch.architecture == "arm64" and os.environ.get("BREAK_ARM"))
    """)
    first = pytester.runpytest("--arch=amd64,arm64", f"--multiarch-baseline={baseline}")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["multiarch baseline: baseline * does not exist yet*"])
    assert json.loads(baseline.read_text())["format"] == 1

    monkeypatch.setenv("BREAK_ARM", "1")
    second = pytester.runpytest("--arch=amd64,arm64", f"--multiarch-baseline={baseline}")
    second.stdout.fnmatch_lines([
        "multiarch baseline: compared with *: 1 change(s)",
        "  (tests) [[]arm64[]]: REGRESSION: test_b.py::test_flaky_on_arm passed before, failed now",
    ])

    baseline.write_text("{not json")
    third = pytester.runpytest("--arch=amd64", f"--multiarch-baseline={baseline}")
    third.stdout.fnmatch_lines(["multiarch baseline: baseline * is not valid JSON*"])
    assert "Traceback" not in third.stdout.str()
    assert baseline.read_text() == "{not json"  # an unusable baseline is never overwritten
    baseline.write_text(json.dumps({"format": 0, "images": {}}))
    fourth = pytester.runpytest("--arch=amd64", f"--multiarch-baseline={baseline}")
    fourth.stdout.fnmatch_lines(["multiarch baseline: baseline * has format 0*left as it is*"])
    assert json.loads(baseline.read_text())["format"] == 0


@pytest.mark.parametrize("xdist", [False, True])
def test_report_is_a_shard_with_collected_ids_and_exit_status(
    project: pytest.Pytester, tmp_path: Path, xdist: bool
) -> None:
    """Format 2: what ran where, what was collected and deselected, pytest's exit status."""
    target = tmp_path / "shard.json"
    args = ["--arch=amd64,arm64", f"--multiarch-report={target}", "-k", "not known"]
    project.runpytest(*args, *(["-n", "2"] if xdist else []))
    doc = json.loads(target.read_text())
    assert doc["schema"] == "pytest-multiarch-report"
    assert doc["plugin_version"]
    assert doc["exitstatus"] == 1  # test_broken_on_arm fails on arm64
    arm64 = doc["archs"]["arm64"]
    assert sorted(arm64["collected"]) == ["test_suite.py::test_broken_on_arm",
                                          "test_suite.py::test_ok"]
    assert arm64["deselected"] == ([] if xdist else ["test_suite.py::test_known"])
    assert arm64["run"]["mode"] == "emulated"
    assert arm64["run"]["qemu"]
    assert doc["archs"]["amd64"]["run"]["mode"] == "native"
    assert doc["archs"]["amd64"]["run"]["cpu"]


LONG_NAMES = """
import pytest

@pytest.mark.parametrize("mode", ["mid-workload"])
def test_data_survives_a_restart_of_the_replica_while_the_primary_writes(arch, mode):
    pass

def test_ok(arch):
    assert arch.architecture != "s390x", "differs"
"""


@pytest.mark.parametrize("columns", [60, 100])
def test_matrix_fits_the_terminal_and_keeps_start_and_parameter(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    pytester.makepyfile(test_long_names=LONG_NAMES)
    monkeypatch.setenv("COLUMNS", str(columns))
    result = pytester.runpytest("--arch=amd64,arm64,s390x")
    result.assert_outcomes(passed=5, failed=1)
    lines = result.stdout.lines
    start = lines.index(next(x for x in lines if "multiarch matrix" in x)) + 1
    matrix = []
    for line in lines[start:]:  # up to the next section (failures or the short summary)
        if line.startswith("=") or line.startswith("_" * 3):
            break
        if line:
            matrix.append(line)
    assert len(matrix) >= 8, matrix
    too_wide = [x for x in matrix if len(x) > columns]
    assert not too_wide, too_wide
    labels = [x.split(" | ")[0].rstrip() for x in matrix if " | " in x][1:-1]
    # One rule: every row keeps its start; a cut one keeps its parameter at the end.
    prefix = "test_long"
    assert all(label.startswith(prefix) for label in labels), labels
    long = next(label for label in labels if "[" in label)
    assert long.endswith("[mid-workload]")
    if columns == 60:
        assert "…" in long
    assert any(label.endswith("::test_ok") for label in labels), labels
    assert any("| FAIL" in x for x in matrix), matrix


def test_html_columns_only_with_pytest_html(pytester: pytest.Pytester) -> None:
    """pytest-html loaded: our columns are registered; absent (-p no:html): no error, none."""
    with_html = pytester.parseconfigure("--arch=amd64")
    assert with_html.pluginmanager.get_plugin("multiarch-html") is not None
    without = pytester.parseconfigure("--arch=amd64", "-p", "no:html")
    assert without.pluginmanager.get_plugin("multiarch-html") is None
    pytester.makepyfile(test_x="def test_ok(arch):\n    pass\n")
    result = pytester.runpytest("--arch=amd64", "-p", "no:html")
    result.assert_outcomes(passed=1)
