"""The plugin object of one pytest session, registered with the plugin manager like
pytest-xdist's ``DSession``: it holds the :class:`~pytest_multiarch.session.state.State` and its
hooks are its methods, so nothing lives in module globals and every hook sees the same session.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_multiarch.plugin.gate import NOTE_PROPERTY
from pytest_multiarch.plugin.items import deselect_unchanged, item_platform
from pytest_multiarch.session.report import Outcome
from pytest_multiarch.session.state import State

PLUGIN_NAME = "multiarch-session"


class MultiarchSession:
    """Hooks of one session: header, gate items, changed-only selection, report properties, the
    matrix, the summary, the baseline and the clean-up."""

    def __init__(self, state: State) -> None:
        self.state = state
        #: True when --multiarch-changed-only found nothing changed since the baseline
        self.nothing_to_rerun = False
        #: False in the xdist controller, which collects nothing itself
        self.collected_here = False

    # -- collection -------------------------------------------------------------------------

    def pytest_report_header(self) -> list[str]:
        return self.state.header_lines()

    @pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so they see the gate items too
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        state = self.state
        self.collected_here = True
        if state.cfg.gate_only and items:
            # paths named on the command line are collected even when ignored: not run either
            config.hook.pytest_deselected(items=list(items))
            items.clear()
        if state.cfg.images:
            from pytest_multiarch.plugin.gate import make_gate_items

            gate_items = make_gate_items(session, state)
            items.extend(gate_items)
            # Let the terminal count them ("collected N items") like collected tests.
            config.hook.pytest_collectreport(
                report=pytest.CollectReport("multiarch-gate", "passed", None, list(gate_items))
            )
        if state.cfg.changed_only and state.cfg.baseline_path is not None:
            used = deselect_unchanged(state, items, config)
            self.nothing_to_rerun = used and not items

    # -- reports ----------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        plat = item_platform(item)
        if plat is None:
            return report
        state = self.state
        props = dict(item.user_properties)
        digest = state.digests.get(item.nodeid)
        if digest and "digest" not in props:
            item.user_properties.append(("digest", digest))
        factor = state.emulation.get(plat)
        if factor is not None and "emulation_factor" not in props:
            item.user_properties.append(("emulation_factor", factor))
        image = getattr(item, "multiarch_image", None)
        if image and "image" not in props:
            item.user_properties.append(("image", image))
        if report.failed:
            if call.excinfo is not None and "failure_class" not in props:
                item.user_properties.append(("failure_class", type(call.excinfo.value).__name__))
            for title, text in state.current_logs(item.nodeid):
                if text:
                    report.sections.append((f"Captured container log {title}", text))
        if report.when == "teardown":
            state.forget_logs(item.nodeid)
        # Report attributes, not user properties (which end up in JUnit): they travel from xdist
        # workers to the controller, which writes the shard.
        indexes, variants = state.image_facts()
        if indexes:
            report.multiarch_images = {"index": indexes, "variants": variants}  # type: ignore[attr-defined]
        if report.when == "call" and state.rest_records.get(item.nodeid):
            report.multiarch_rest = [  # type: ignore[attr-defined]
                answer.to_json() for answer in state.rest_records[item.nodeid]
            ]
        if report.when == "teardown":
            state.rest_records.pop(item.nodeid, None)
        report.user_properties = list(item.user_properties)
        return report

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The shard's collected ids (an xdist controller hears them from XdistSupport)."""
        if self.collected_here and not hasattr(session.config, "workerinput"):
            self.state.record_collection([r for r in map(_item_row, session.items) if r], [])

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.state.record_collection([], [r for r in map(_item_row, items) if r])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Feed the matrix; runs in the xdist controller too, so it sees every worker's results."""
        props = dict(report.user_properties)
        note = props.get(NOTE_PROPERTY)
        if report.when == "call" and isinstance(note, str):
            self.state.summary_lines.append(note)
        arch = props.get("arch")
        if not isinstance(arch, str):
            return
        matrix = self.state.matrix
        matrix.add_time(arch, report.duration)
        factor = props.get("emulation_factor")
        if isinstance(factor, int | float):  # measured in an xdist worker
            matrix.line(arch).emulation_factor = float(factor)
        relevant = (
            report.when == "call"
            or (report.when == "setup" and not report.passed)
            or (report.when == "teardown" and report.failed)
        )
        if not relevant:
            return
        self._record_facts(report, arch)
        matrix.add(Outcome(
            test=row_name(report.nodeid, arch), arch=arch, outcome=_outcome_of(report),
            duration=report.duration, failure_class=_str_or_none(props.get("failure_class")),
            message=_failure_message(report), image=_str_or_none(props.get("image")),
            digest=_str_or_none(props.get("digest")),
        ))
        facts = props.get("multiarch_facts")  # what the index/attestations/packages checks saw
        if isinstance(facts, dict) and isinstance(props.get("image"), str):
            matrix.note(str(props["image"]), arch, facts)

    def _record_facts(self, report: pytest.TestReport, arch: str) -> None:
        """Index digests, variants and REST answers a (possibly remote) worker attached."""
        matrix = self.state.matrix
        images = getattr(report, "multiarch_images", None)
        if isinstance(images, dict):
            for ref, digest in images.get("index", {}).items():
                matrix.index_digests.setdefault(ref, digest)
            for ref, per_arch in images.get("variants", {}).items():
                for name, variant in per_arch.items():
                    matrix.variants.setdefault(ref, {}).setdefault(name, variant)
        answers = getattr(report, "multiarch_rest", None)
        if isinstance(answers, list) and answers:
            matrix.rest[row_name(report.nodeid, arch), arch] = answers

    # -- end of session ---------------------------------------------------------------------

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        width = config.get_terminal_writer().fullwidth
        for plat in self.state.archs:  # how each arch runs: -q skips the header that asks
            self.state.status(plat)
        lines = self.state.matrix.render(width=width)
        if lines:
            terminalreporter.write_sep("=", "multiarch matrix")
            for line in lines:
                terminalreporter.write_line(line)
        for line in self.state.summary_lines:
            terminalreporter.write_line(line)

    @pytest.hookimpl(trylast=True)  # after pytest tore the session fixtures down
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # Regression mode: "nothing changed since the baseline" is the answer a CI step wants,
        # not pytest's "no tests ran" (exit 5).
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self._nothing_to_rerun():
            session.exitstatus = pytest.ExitCode.OK
            self.state.summary_lines.append(
                "multiarch: --multiarch-changed-only: nothing changed since the baseline, "
                "nothing to re-test (exit 0)"
            )
        if not hasattr(session.config, "workerinput"):  # the controller writes report/baseline
            self.state.exitstatus = int(session.exitstatus)
            self.state.finish()

    def _nothing_to_rerun(self) -> bool:
        if self.collected_here or not self.state.cfg.changed_only:
            return self.nothing_to_rerun
        # The xdist controller saw no items: ask the baseline the question its workers asked.
        from pytest_multiarch.plugin.items import variants_to_rerun
        from pytest_multiarch.session.baseline import load_baseline

        assert self.state.cfg.baseline_path is not None  # options.load() requires it
        old = load_baseline(self.state.cfg.baseline_path).document
        return old is not None and variants_to_rerun(self.state, old) == (set(), set())

    def pytest_unconfigure(self) -> None:
        self.state.close()

    def pytest_keyboard_interrupt(self) -> None:
        # Session fixtures are torn down by pytest; this is the last line of defence.
        self.state.close()


def _failure_message(report: pytest.TestReport) -> str | None:
    """The first line of what went wrong (or why it was skipped), for the matrix and JSON."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:300]
    if not report.failed or report.longrepr is None:
        return None
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", "") or report.longrepr).strip()
    return text.splitlines()[0][:300] if text else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _outcome_of(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return report.outcome


def row_name(nodeid: str, arch: str) -> str:
    """The node id without the arch parameter: one matrix row per test."""
    if nodeid.startswith("multiarch-gate["):  # generated gate checks: "REF::check"
        nodeid = nodeid[len("multiarch-gate["):].replace("]::", " ", 1)
    head, sep, params = nodeid.rpartition("[")
    if not sep:
        return nodeid
    parts = params.rstrip("]").split("-")
    if len(parts) >= 3 and parts[-2] == "to" and parts[-1] == arch:
        # a replication pair "PRIMARY-to-REPLICA" sits in its replica's column
        rest = "-".join([*parts[:-3], f"from {parts[-3]}"])
        return f"{head}[{rest}]"
    if arch in parts:
        parts.remove(arch)
    rest = "-".join(parts)
    return f"{head}[{rest}]" if rest else head


def _item_row(item: pytest.Item) -> tuple[str, str] | None:
    plat = item_platform(item)
    return None if plat is None else (plat.arch_name, row_name(item.nodeid, plat.arch_name))


def row_of_nodeid(nodeid: str, arch_names: frozenset[str]) -> tuple[str, str] | None:
    """(arch, row) of a node id known only by name (xdist workers' collection)."""
    last = nodeid.rsplit("::", 1)[-1]
    if "[" not in last:
        return None
    tokens = last.split("[", 1)[1].rstrip("]").split("-")
    if len(tokens) >= 3 and tokens[-2] == "to" and tokens[-1] in arch_names:
        arch: str | None = tokens[-1]  # a replication pair sits in its replica's column
    else:
        arch = next((t for t in tokens if t in arch_names), None)
    return None if arch is None else (arch, row_name(nodeid, arch))
