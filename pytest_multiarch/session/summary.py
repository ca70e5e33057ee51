"""The merged verdict for people and CI systems: a Markdown table (GitHub step summary, merge
request notes) and a JUnit file (one test case per test and arch)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pytest_multiarch._fs import write_atomic
from pytest_multiarch.session.merge import MergeResult
from pytest_multiarch.session.report import Matrix

_MARK = {"passed": "✅ pass", "failed": "❌ FAIL", "error": "❌ ERROR", "skipped": "⏭ skip",
         "xfailed": "xfail", "xpassed": "⚠ XPASS"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: MergeResult, title: str = "pytest-multiarch") -> str:
    """The matrix as a Markdown table, then how each arch ran, then every problem."""
    matrix = result.matrix
    archs = matrix.archs
    verdict = "passed" if result.ok else "FAILED"
    lines = [f"## {title}: {verdict} ({len(archs)} archs, {len(matrix.tests())} tests)", ""]
    if archs:
        lines.append("| test | " + " | ".join(archs) + " |")
        lines.append("|---|" + "---|" * len(archs))
        collected = {a: set(matrix.collected.get(a, ())) for a in archs}
        for test in matrix.tests():
            row = []
            for arch in archs:
                o = matrix.cell(test, arch)
                if o is None:
                    row.append("not run" if test in collected[arch] else "–")
                else:
                    text = _MARK.get(o.outcome, o.outcome)
                    if o.failure_class and o.outcome in ("failed", "error"):
                        text += f" `{o.failure_class}`"
                    row.append(text)
            lines.append(f"| `{_cell(test)}` | " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
        lines.append("| arch | how it ran | host | CPU | shard |")
        lines.append("|---|---|---|---|---|")
        for arch in archs:
            line = matrix.line(arch)
            run = line.run
            cpu = run.get("cpu") or "–"
            if run.get("qemu"):
                cpu = f"qemu {str(run['qemu']).split()[0]}, {run.get('cpu_model') or 'default'}"
            lines.append(f"| {arch} | {_cell(line.how)} | {_cell(str(run.get('host') or '–'))} "
                         f"| {_cell(str(cpu))} | {_cell(str(run.get('shard') or '–'))} |")
    if result.problems:
        lines += ["", "### Why the gate fails", ""]
        for problem in result.problems:
            first, *rest = problem.splitlines()
            lines.append(f"- {_cell(first)}")
            lines += [f"  - `{_cell(r.strip())}`" for r in rest]
    return "\n".join(lines) + "\n"


def append_markdown(path: Path, text: str) -> None:
    """Append (the GitHub step summary file collects every step's output)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def write_junit(matrix: Matrix, path: Path) -> None:
    """One ``<testcase>`` per test and arch, with ``arch``/``digest``/``image`` properties."""
    suite = ET.Element("testsuite", name="pytest-multiarch")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for o in matrix.outcomes:
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=o.test.split("::", 1)[0],
                             name=f"{o.test}[{o.arch}]", time=f"{o.duration:.3f}")
        props = ET.SubElement(case, "properties")
        for name, value in (("arch", o.arch), ("digest", o.digest), ("image", o.image)):
            if value:
                ET.SubElement(props, "property", name=name, value=value)
        if o.outcome in ("failed", "error"):
            counts["failures" if o.outcome == "failed" else "errors"] += 1
            tag = "failure" if o.outcome == "failed" else "error"
            ET.SubElement(case, tag, message=o.message or o.outcome,
                          type=o.failure_class or o.outcome)
        elif o.outcome in ("skipped", "xfailed"):
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=o.message or o.outcome)
    for key, count in counts.items():
        suite.set(key, str(count))
    tree_root = ET.Element("testsuites")
    tree_root.append(suite)
    write_atomic(path, ET.tostring(tree_root, encoding="unicode", xml_declaration=True) + "\n")
