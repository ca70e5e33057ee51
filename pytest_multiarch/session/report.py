"""The arch matrix: outcomes of every test on every architecture, as text and as JSON.

Plain library code: the plugin feeds it one :class:`Outcome` per test and arch, and asks it for
the terminal table and the JSON document of ``--multiarch-report``.
"""

from __future__ import annotations

import html as _html
import json
import platform as _platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_multiarch._fs import write_atomic

REPORT_FORMAT = 1

#: Row labels keep at least this many characters before cells are cut to fit the terminal.
MIN_LABEL = 24

_SYMBOL = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "skip",
    "xfailed": "xfail",
    "xpassed": "XPASS",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One test on one architecture."""

    test: str  # node id without the arch parameter
    arch: str
    outcome: str  # passed, failed, error, skipped, xfailed, xpassed
    duration: float = 0.0
    failure_class: str | None = None
    message: str | None = None
    image: str | None = None
    digest: str | None = None


@dataclass(slots=True)
class ArchInfoLine:
    """How an architecture ran in this session."""

    arch: str
    how: str = "emulated"  # "native", "emulated", "native on HOST", "unavailable: …"
    emulation_factor: float | None = None
    wall_time: float = 0.0


@dataclass(slots=True)
class Matrix:
    """Accumulates outcomes; renders the table and the JSON report."""

    archs: list[str]
    arch_lines: dict[str, ArchInfoLine] = field(default_factory=dict)
    #: (test, arch) -> outcome, in the order recorded; one report per test makes this a hot path
    _cells: dict[tuple[str, str], Outcome] = field(default_factory=dict)

    @property
    def outcomes(self) -> list[Outcome]:
        """Every recorded outcome, in the order recorded."""
        return list(self._cells.values())

    def add(self, outcome: Outcome) -> None:
        """Record one outcome (a later record for the same test and arch replaces it)."""
        key = (outcome.test, outcome.arch)
        self._cells.pop(key, None)  # a replacement counts as recorded now
        self._cells[key] = outcome
        if outcome.arch not in self.archs:
            self.archs.append(outcome.arch)

    def line(self, arch: str) -> ArchInfoLine:
        """How *arch* ran, created on first use; the plugin fills it in as it learns."""
        return self.arch_lines.setdefault(arch, ArchInfoLine(arch))

    def add_time(self, arch: str, seconds: float) -> None:
        """Count *seconds* of setup, call or teardown towards *arch*'s wall time."""
        self.line(arch).wall_time += seconds

    def tests(self) -> list[str]:
        """Row names, in first-seen order."""
        return list(dict.fromkeys(test for test, _ in self._cells))

    def cell(self, test: str, arch: str) -> Outcome | None:
        """The outcome of *test* on *arch*, if it ran there."""
        return self._cells.get((test, arch))

    def totals(self) -> dict[str, dict[str, int]]:
        """Per arch: how many of each outcome."""
        result: dict[str, dict[str, int]] = {a: {} for a in self.archs}
        for o in self._cells.values():
            counts = result.setdefault(o.arch, {})
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        return result

    def render(self, width: int = 120) -> list[str]:
        """The terminal table: tests x archs, then per-arch totals and how each arch ran.

        Every line fits in *width* (the terminal width pytest reports): row labels are shortened
        in the middle (:func:`shorten_middle`) down to MIN_LABEL, then the widest cells at their
        end (the outcome word leads), when the table would not.
        """
        if not self._cells:
            return []
        archs = self.archs
        tests = self.tests()
        cells = {(t, a): self._cell_text(t, a) for t in tests for a in archs}
        totals = self.totals()
        total_text = {a: _fmt_totals(totals.get(a, {})) for a in archs}
        col = {
            a: max(len(a), len(total_text[a]), *(len(cells[t, a]) for t in tests)) for a in archs
        }
        # Columns give way first, down to an even share of what leaves the labels two fifths of
        # the width (MIN_LABEL at least), but never below their arch name or "ERROR".
        # Narrows col in place when even MIN_LABEL-wide labels leave too little room.
        name_width = fit_columns(max(len("test"), *(len(t) for t in tests)), col, width)

        def row(name: str, values: list[str]) -> str:
            shown = shorten_middle(name, name_width)
            return shown.ljust(name_width) + "".join(
                " | " + _fit_line(v, col[a]).ljust(col[a])  # the outcome word leads: cut the end
                for a, v in zip(archs, values, strict=True)
            )

        lines = [row("test", archs), "-" * len(row("test", archs))]
        lines += [row(t, [cells[t, a] for a in archs]) for t in tests]
        lines.append("-" * len(lines[0]))
        lines.append(row("totals", [total_text[a] for a in archs]))
        for arch in archs:
            text = self.arch_summary(arch)
            if len(text) > width:  # the parenthesis only explains; drop it before cutting
                text = text.replace(" (setup, call and teardown)", "")
            lines.append(_fit_line(text, width))
        return lines

    def _cell_text(self, test: str, arch: str) -> str:
        o = self.cell(test, arch)
        if o is None:
            return "-"
        text = _SYMBOL.get(o.outcome, o.outcome)
        if o.failure_class and o.outcome in ("failed", "error"):
            text += f" {o.failure_class}"
        return text

    def arch_summary(self, arch: str) -> str:
        """``arm64: emulated, emulation factor 5.4x, 12.0s in its tests (…)``."""
        info = self.arch_lines.get(arch, ArchInfoLine(arch))
        factor = (
            f", emulation factor {info.emulation_factor:.1f}x"
            if info.emulation_factor is not None else ""
        )
        return (f"{arch}: {info.how}{factor}, {info.wall_time:.1f}s in its tests "
                "(setup, call and teardown)")

    def render_html(self) -> str:
        """The matrix as an HTML table (pytest-html's summary): the same rows and cells as
        :meth:`render`, full labels, each cell's class ``multiarch-OUTCOME``."""
        if not self._cells:
            return ""
        esc = _html.escape
        head = "".join(f"<th>{esc(a)}</th>" for a in self.archs)
        rows = []
        for test in self.tests():
            tds = []
            for arch in self.archs:
                o = self.cell(test, arch)
                kind = o.outcome if o is not None else "none"
                title = f' title="{esc(o.message)}"' if o is not None and o.message else ""
                tds.append(f'<td class="multiarch-{kind}"{title}>'
                           f"{esc(self._cell_text(test, arch))}</td>")
            rows.append(f'<tr><td class="multiarch-test">{esc(test)}</td>{"".join(tds)}</tr>')
        totals = self.totals()
        rows.append('<tr class="multiarch-totals"><td>totals</td>' + "".join(
            f"<td>{esc(_fmt_totals(totals.get(a, {})))}</td>" for a in self.archs) + "</tr>")
        how = "".join(f"<li>{esc(self.arch_summary(a))}</li>" for a in self.archs)
        return (
            '<div class="multiarch-matrix"><h2>multiarch matrix</h2>'
            f'<table class="multiarch-matrix-table"><thead><tr><th>test</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><ul>{how}</ul></div>'
        )

    def to_json(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The document written by ``--multiarch-report`` (format version in ``format``)."""
        images: dict[str, dict[str, dict[str, Any]]] = {}
        for o in self._cells.values():
            key = o.image or "(tests)"
            per_arch = images.setdefault(key, {}).setdefault(
                o.arch, {"digest": o.digest, "how": self._how(o.arch), "checks": []}
            )
            if o.digest and not per_arch["digest"]:
                per_arch["digest"] = o.digest
            per_arch["checks"].append(
                {k: v for k, v in asdict(o).items() if k not in ("arch", "image")}
            )
        totals = self.totals()
        doc: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "host": {"machine": _platform.machine(), "node": _platform.node(),
                     "python": _platform.python_version()},
            "archs": {
                a: {
                    "how": self._how(a),
                    "emulation_factor": self.arch_lines[a].emulation_factor
                    if a in self.arch_lines else None,
                    "wall_time": round(self.arch_lines[a].wall_time, 3)
                    if a in self.arch_lines else 0.0,
                    "totals": totals.get(a, {}),
                }
                for a in self.archs
            },
            "images": images,
        }
        if extra:
            doc.update(extra)
        return doc

    def _how(self, arch: str) -> str:
        return self.arch_lines[arch].how if arch in self.arch_lines else "unknown"


def shorten_middle(name: str, width: int) -> str:
    """*name* in at most *width* characters, cut in the middle: the start (the file, or the gate's
    image) and the end with its ``[parameter]`` stay, so rows remain telling apart.

    One rule for every row label, whatever its length: at 40 characters
    ``tests/test_replication.py::test_data_survives_a_restart_mid_workload[from amd64]``
    becomes ``tests/test…tart_mid_workload[from amd64]``.
    """
    if len(name) <= width:
        return name
    if width <= 1:
        return "…"[:width]
    head, sep, param = name.rpartition("[")
    tail = sep + param if sep and name.endswith("]") else ""
    if not tail:
        head = name
    room = width - 1 - len(tail)  # characters of *head* that fit beside "…" and the parameter
    if room < min(8, len(head)):  # the parameter alone is too long: cut across both
        keep = width - 1
        return name[: keep - keep // 2] + "…" + (name[-(keep // 2):] if keep // 2 else "")
    # A third for the start, two for the end: rows tend to share their start (the file, the
    # registry), while the end names the test or the check.
    start = max(room // 3, min(10, room))
    end = room - start
    return head[:start] + "…" + (head[-end:] if end else "") + tail


def fit_columns(name_width: int, col: dict[str, int], width: int) -> int:
    """The label width that fits the table in *width*; narrows *col* (in place) when labels of
    MIN_LABEL still leave too little room: the widest column first, never below its arch name
    or ``ERROR``."""
    total = sum(col.values()) + 3 * len(col)
    if name_width + total <= width:
        return name_width
    name_width = max(min(MIN_LABEL, name_width), width - total)
    floor = {a: max(len(a), len("ERROR")) for a in col}
    excess = name_width + total - width
    while excess > 0:
        widest = max(col, key=lambda a: col[a] - floor[a])
        if col[widest] <= floor[widest]:
            break  # nothing left to give: the terminal is narrower than the table can be
        col[widest] -= 1
        excess -= 1
    return name_width


def _fit_line(text: str, width: int) -> str:
    """A free-text line in *width*: cut at the end (its start says what it is about)."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _fmt_totals(counts: dict[str, int]) -> str:
    order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return ", ".join(parts) or "0"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically; create the parent directory. Raises OSError with the path in it."""
    write_atomic(path, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
