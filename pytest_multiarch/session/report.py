"""The arch matrix: outcomes of every test on every architecture, as text and as JSON.

Plain library code: the plugin feeds it one :class:`Outcome` per test and arch, and asks it for
the terminal table and the JSON document of ``--multiarch-report``.  That document is a *shard*:
``pytest-multiarch merge`` adds shards of several jobs up to one matrix, so its schema is
versioned (``schema`` + ``format``) and documented in docs/REPORT-SCHEMA.md.
"""

from __future__ import annotations

import html as _html
import json
import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_multiarch import __version__
from pytest_multiarch._fs import write_atomic

#: What every report says it is, so a merge can tell it from some other tool's JSON.
REPORT_SCHEMA = "pytest-multiarch-report"
#: Version 2 added per-arch run facts, collected ids, index digests, variants and REST records.
REPORT_FORMAT = 2

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


#: What the index/attestations/packages checks add to ``images.<ref>.<arch>`` in the JSON.
FACT_KEYS = ("attached", "attachments", "packages", "package_versions", "packages_differing")


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


#: Outcome fields a report's check entry holds (arch and image are its keys there).
_CHECK_FIELDS = tuple(f.name for f in fields(Outcome) if f.name not in ("arch", "image"))


@dataclass(slots=True)
class ArchInfoLine:
    """How an architecture ran in this session."""

    arch: str
    how: str = "emulated"  # "native", "emulated", "native on HOST", "unavailable: …"
    emulation_factor: float | None = None
    wall_time: float = 0.0
    #: where and on what it ran: mode, host, machine, cpu, qemu, cpu_model (see run_facts)
    run: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Matrix:
    """Accumulates outcomes; renders the table and the JSON report."""

    archs: list[str]
    arch_lines: dict[str, ArchInfoLine] = field(default_factory=dict)
    #: arch -> row names collected (selected) / deselected, so "not run" differs from "missing"
    collected: dict[str, list[str]] = field(default_factory=dict)
    deselected: dict[str, list[str]] = field(default_factory=dict)
    #: image reference -> the index (or single manifest) digest it resolved to
    index_digests: dict[str, str] = field(default_factory=dict)
    #: image reference -> arch -> {"digest", "config", "layers"}, for baselines of merged runs
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: (test, arch) -> normalized REST answers recorded by ``multiarch_rest.record``
    rest: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    #: (test, arch) -> outcome, in the order recorded; one report per test makes this a hot path
    _cells: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    #: (image, arch) -> what the variant checks learned: what is attached, packages that differ
    facts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def note(self, image: str, arch: str, facts: dict[str, Any]) -> None:
        """Record facts about one variant (session.variants.facts) for the table and JSON."""
        self.facts.setdefault((image, arch), {}).update(facts)

    def note_from_json(self, image: str, arch: str, entry: Mapping[str, Any]) -> None:
        """Take back the facts a report's ``images.<ref>.<arch>`` entry carries (a merge)."""
        found = {k: entry[k] for k in FACT_KEYS if k in entry}
        if found:
            self.note(image, arch, found)

    def package_versions(self) -> dict[tuple[str, str], dict[str, str]]:
        """(image, arch) -> package name -> version, as the packages check saw them."""
        return {key: found["package_versions"] for key, found in self.facts.items()
                if isinstance(found.get("package_versions"), dict)}

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
        """Row names, in first-seen order; collected tests that never ran come last."""
        rows = dict.fromkeys(test for test, _ in self._cells)
        for names in self.collected.values():
            rows.update(dict.fromkeys(names))
        return list(rows)

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
        lines += self._fact_lines()  # not cut: they name packages and versions
        return lines

    def _cell_text(self, test: str, arch: str) -> str:
        o = self.cell(test, arch)
        if o is None:
            # collected but no outcome: the run stopped early; "-": not for this arch
            if test in self.collected.get(arch, ()):
                return "not run"
            return "deselected" if test in self.deselected.get(arch, ()) else "-"
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
        shard = f" [shard {info.run['shard']}]" if info.run.get("shard") else ""
        model = f" on cpu {info.run['cpu_model']}" if info.run.get("cpu_model") else ""
        return (f"{arch}: {info.how}{model}{factor}, {info.wall_time:.1f}s in its tests "
                f"(setup, call and teardown){shard}")

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
        """The document written by ``--multiarch-report`` (docs/REPORT-SCHEMA.md)."""
        images: dict[str, dict[str, dict[str, Any]]] = {}
        for o in self._cells.values():
            key = o.image or "(tests)"
            per_arch = images.setdefault(key, {}).setdefault(
                o.arch, {"digest": o.digest, "how": self._how(o.arch), "checks": []}
            )
            if o.digest and not per_arch["digest"]:
                per_arch["digest"] = o.digest
            # getattr, not dataclasses.asdict: asdict deep-copies and was 85% of a merge's time
            per_arch["checks"].append({k: getattr(o, k) for k in _CHECK_FIELDS})
        for (image, arch), found in self.facts.items():
            if image in images and arch in images[image]:
                images[image][arch].update(found)
        totals = self.totals()
        rest: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (test, arch), answers in self.rest.items():
            rest.setdefault(test, {})[arch] = answers
        doc: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "format": REPORT_FORMAT,
            "plugin_version": __version__,
            "host": {"machine": _platform.machine(), "node": _platform.node(),
                     "python": _platform.python_version()},
            "archs": {a: self._arch_json(a, totals.get(a, {})) for a in self.archs},
            "images": images,
            "index_digests": dict(self.index_digests),
            "variants": self.variants,
            "rest": rest,
        }
        if extra:
            doc.update(extra)
        return doc

    def _fact_lines(self) -> list[str]:
        lines: list[str] = []
        for (image, arch), found in self.facts.items():
            if found.get("attached", "nothing") != "nothing":  # the JSON says "nothing" too
                lines.append(f"{arch} {image}: attached: {found['attached']}")
            differing = found.get("packages_differing")
            if differing:
                shown = ", ".join(f"{n} {v or '(absent)'}" for n, v in sorted(differing.items()))
                lines.append(f"{arch} {image}: package versions that differ: {shown}")
        return lines

    def _arch_json(self, arch: str, totals: dict[str, int]) -> dict[str, Any]:
        line = self.arch_lines.get(arch)
        run = {"mode": _mode_of(self._how(arch)), "host": None, "machine": None, "cpu": None,
               "qemu": None, "cpu_model": None}  # cpu_model: the QEMU_CPU model, if one is set
        if line is not None:
            run.update(line.run)
        return {
            "how": self._how(arch),
            "run": run,
            "emulation_factor": line.emulation_factor if line else None,
            "wall_time": round(line.wall_time, 3) if line else 0.0,
            "totals": totals,
            "collected": self.collected.get(arch, []),
            "deselected": self.deselected.get(arch, []),
        }

    def _how(self, arch: str) -> str:
        return self.arch_lines[arch].how if arch in self.arch_lines else "unknown"


def _mode_of(how: str) -> str:
    """``native``, ``emulated`` or ``unavailable`` from the human *how* line."""
    for mode in ("native", "unavailable", "unknown"):
        if how.startswith(mode):
            return mode
    return "emulated"


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


#: Above this size a document is written unindented: ``indent`` switches json to its pure-Python
#: encoder, seconds for a 5-shard x 2,000-test merged report (measured by bench_merge.py).
PRETTY_LIMIT = 1 << 20


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically; create the parent directory. Raises OSError with the path in it."""
    text = json.dumps(document, sort_keys=True, default=str)
    if len(text) < PRETTY_LIMIT:
        text = json.dumps(document, indent=2, sort_keys=True, default=str)
    write_atomic(path, text + "\n")
