"""The pytest-html report with the arch columns and the matrix, rendered by a real headless
Chromium (Debian's ``chromium``, from scripts/provision-host): pytest-html 4 builds its results
table in the browser from embedded data, so only a browser shows what a reader sees."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)

SUITE = '''
def test_runs(arch, multiarch_run):
    result = multiarch_run({good!r}, ["uname", "-m"], check=True)
    assert result.stdout.strip() == arch.info.uname


def test_differs_on_s390x(arch):
    assert arch.arch_name != "s390x", "s390x answer differs"
'''


class _Rows(HTMLParser):
    """Every ``<tr>`` of the rendered page as {td class: text}, plus the page's headers."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.headers: list[str] = []
        self._row: dict[str, str] | None = None
        self._cell: str | None = None
        self._in_th = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if tag == "tr":
            self._row = {}
        elif tag == "td" and self._row is not None:
            # pytest-html adds state classes ("col-result collapsed"): the first one names it
            self._cell, self._text = (classes.split() or [f"td{len(self._row)}"])[0], []
        elif tag == "th":
            self._in_th, self._text = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row[self._cell] = "".join(self._text).strip()
            self._row["cells"] = self._row.get("cells", "") + "|" + self._row[self._cell]
            self._cell = None
        elif tag == "th" and self._in_th:
            self.headers.append("".join(self._text).strip())
            self._in_th = False
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None or self._in_th:
            self._text.append(data)


def _render(page: Path, profile: Path) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no `chromium` on PATH: run scripts/provision-host (apt-get install chromium)")
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_report_in_chromium(
    pytester: pytest.Pytester, testbed: Testbed, corpus: dict[str, Any], tmp_path: Path
) -> None:
    pytester.makepyfile(test_suite=SUITE.format(good=testbed.ref("busybox")))
    page = tmp_path / "report.html"
    result = pytester.runpytest_subprocess(
        # Under xdist and -q (no header): the controller writes the report from workers' results.
        "--arch=amd64,arm64,s390x", "--arch-required", "-p", "no:cacheprovider", "-q", "-n", "2",
        f"--html={page}", "--self-contained-html", timeout=600,
    )
    result.assert_outcomes(passed=5, failed=1)
    raw = page.read_text()
    assert '<td class="col-arch">' not in raw  # the table exists only once a browser ran the JS
    dom = _render(page, tmp_path / "chromium-profile")
    parsed = _Rows()
    parsed.feed(dom)
    assert {"arch", "digest", "ran"} <= set(parsed.headers), parsed.headers
    results = {r["col-testId"]: r for r in parsed.rows if "col-testId" in r}
    digests = corpus["busybox"]["digests"]
    for arch, ran in (("amd64", "native on "), ("arm64", "emulated on qemu "),
                      ("s390x", "emulated on qemu ")):
        row = results[f"test_suite.py::test_runs[{arch}]"]
        assert row["col-result"] == "Passed"
        assert row["col-arch"] == arch
        assert row["col-digest"] == digests[f"linux/{arch}"].split(":")[1][:12]
        assert row["col-ran"].startswith(ran), row
    assert "CPU" in results["test_suite.py::test_runs[arm64]"]["col-ran"]
    failed = results["test_suite.py::test_differs_on_s390x[s390x]"]
    assert (failed["col-result"], failed["col-arch"], failed["col-digest"]) == ("Failed", "s390x",
                                                                               "")
    # The matrix in the summary: one row per test, a cell per arch.
    matrix = {r["multiarch-test"]: r for r in parsed.rows if "multiarch-test" in r}
    assert matrix["test_suite.py::test_runs"]["cells"] == "|test_suite.py::test_runs|PASS|PASS|PASS"
    assert matrix["test_suite.py::test_differs_on_s390x"]["cells"] == (
        "|test_suite.py::test_differs_on_s390x|PASS|PASS|FAIL AssertionError")
    assert "multiarch matrix" in dom
