"""The arch matrix: outcomes of every test on every architecture, as text and as JSON.

Plain library code: the plugin feeds it one :class:`Outcome` per test and arch, and asks it for
the terminal table and the JSON document of ``--multiarch-report``.  That document is a *shard*:
``pytest-multiarch merge`` adds shards of several jobs up to one matrix, so its schema is
versioned (``schema`` + ``format``) and documented in docs/REPORT-SCHEMA.md.
"""

from __future__ import annotations

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
        """The terminal table: tests x archs, then per-arch totals and how each arch ran."""
        if not self._cells:
            return []
        archs = self.archs
        tests = self.tests()
        collected = {a: set(self.collected.get(a, ())) for a in archs}
        deselected = {a: set(self.deselected.get(a, ())) for a in archs}
        cells: dict[tuple[str, str], str] = {}
        for test in tests:
            for arch in archs:
                o = self.cell(test, arch)
                if o is None:
                    # collected but no outcome: the run stopped early; "-": not for this arch
                    cells[test, arch] = ("not run" if test in collected[arch]
                                         else "deselected" if test in deselected[arch] else "-")
                else:
                    text = _SYMBOL.get(o.outcome, o.outcome)
                    if o.failure_class and o.outcome in ("failed", "error"):
                        text += f" {o.failure_class}"
                    cells[test, arch] = text
        totals = self.totals()
        total_text = {a: _fmt_totals(totals.get(a, {})) for a in archs}
        col = {
            a: max(len(a), len(total_text[a]), *(len(cells[t, a]) for t in tests)) for a in archs
        }
        name_width = max(len("test"), *(len(t) for t in tests))
        budget = max(20, width - sum(col.values()) - 3 * len(archs) - 1)
        name_width = min(name_width, budget)

        def row(name: str, values: list[str]) -> str:
            shown = _fit(name, name_width)
            return shown.ljust(name_width) + "".join(
                " | " + v.ljust(col[a]) for a, v in zip(archs, values, strict=True)
            )

        lines = [row("test", archs), "-" * len(row("test", archs))]
        lines += [row(t, [cells[t, a] for a in archs]) for t in tests]
        lines.append("-" * len(lines[0]))
        lines.append(row("totals", [total_text[a] for a in archs]))
        for arch in archs:
            info = self.arch_lines.get(arch, ArchInfoLine(arch))
            factor = (
                f", emulation factor {info.emulation_factor:.1f}x"
                if info.emulation_factor is not None else ""
            )
            shard = f" [shard {info.run['shard']}]" if info.run.get("shard") else ""
            lines.append(f"{arch}: {info.how}{factor}, {info.wall_time:.1f}s in its tests "
                         f"(setup, call and teardown){shard}")
        lines += self._fact_lines()
        return lines

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


def _fit(name: str, width: int) -> str:
    """*name* cut to *width*: drop the file part of a node id first, then its start."""
    if len(name) <= width:
        return name
    tail = name.rsplit("::", 1)[-1]
    if len(tail) <= width:
        return tail
    return "…" + tail[-(width - 1):]


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
