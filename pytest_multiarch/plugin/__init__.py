"""pytest wiring: options, parametrization over archs, availability, the matrix and the report.

Kept thin: everything that does real work lives in plain modules (platforms, registry, audit,
runners, report) and in :mod:`pytest_multiarch.plugin.fixtures` /
:mod:`pytest_multiarch.plugin.gate`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.plugin import hookspecs
from pytest_multiarch.plugin import options as _config
from pytest_multiarch.plugin.fixtures import *  # noqa: F403 - registers the public fixtures
from pytest_multiarch.plugin.fixtures import require_available
from pytest_multiarch.plugin.items import (
    ARCH_ARG,
    PAIR_ARG,
    deselect_unchanged,
    item_platform,
    item_platforms,
)
from pytest_multiarch.plugin.options import STATE_KEY, get_state
from pytest_multiarch.session.report import Outcome
from pytest_multiarch.session.state import State


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    _config.addoption(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "archs(*names): run this test only on these architectures (aliases accepted), "
        "e.g. @pytest.mark.archs('arm64', 's390x')",
    )
    config.addinivalue_line(
        "markers",
        "xfail_arch(*names, reason='', strict=True): expect this test to fail on these "
        "architectures",
    )
    config.addinivalue_line(
        "markers",
        "replication_pairs(*pairs): (primary, replica) arch pairs for multiarch_replication, "
        "e.g. @pytest.mark.replication_pairs(('arm64', 'amd64'))",
    )
    config.addinivalue_line(
        "markers",
        "multiarch_static: the test only reads images; never skip it for a missing emulator",
    )
    config.addinivalue_line(
        "markers",
        "multiarch_allow(*globs): foreign-architecture ELF paths the audit accepts in this test",
    )
    config.addinivalue_line(
        "markers",
        "multiarch_allow_packages(*globs): package names whose version may differ across archs "
        "for multiarch_variants, e.g. @pytest.mark.multiarch_allow_packages('tzdata')",
    )
    cfg = _config.load(config)
    archs = config.hook.pytest_multiarch_select_archs(config=config, archs=cfg.archs.value)
    state = State(cfg, tuple(archs) if archs else cfg.archs.value, hook=config.hook, config=config)
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(MatrixRecorder(state), "multiarch-matrix")
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_multiarch.plugin import xdist as xdist_support

        config.pluginmanager.register(xdist_support.XdistSupport(state), "multiarch-xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return get_state(config).header_lines()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if PAIR_ARG in metafunc.fixturenames:
        _parametrize_pairs(metafunc)
    if ARCH_ARG not in metafunc.fixturenames:
        return
    state = get_state(metafunc.config)
    wanted = list(state.archs)
    only = _marker_archs(metafunc.definition, "archs")
    if only is not None:
        wanted = [p for p in wanted if p in only]
    xfails = {
        plat: mark for mark in metafunc.definition.iter_markers("xfail_arch")
        for plat in _parse_marker_names(mark, metafunc.definition.nodeid)
    }
    params = []
    for plat in wanted:
        marks: list[pytest.MarkDecorator] = []
        mark = xfails.get(plat)
        if mark is not None:
            marks.append(pytest.mark.xfail(
                reason=mark.kwargs.get("reason", "") or f"known failure on {plat.arch_name}",
                strict=mark.kwargs.get("strict", True),
            ))
        params.append(pytest.param(plat, marks=marks, id=plat.arch_name))
    if not params:
        names = ", ".join(p.arch_name for p in (only or ()))
        params = [pytest.param(
            None, id="no-arch",
            marks=pytest.mark.skip(
                reason=f"@archs({names}) names none of the requested archs "
                f"({', '.join(p.arch_name for p in state.archs)})"
            ),
        )]
    metafunc.parametrize(ARCH_ARG, params, scope="session")


def _parametrize_pairs(metafunc: pytest.Metafunc) -> None:
    """``multiarch_replication``: every ordered pair of requested archs, or the marker's."""
    state = get_state(metafunc.config)
    mark = metafunc.definition.get_closest_marker("replication_pairs")
    if mark is not None:
        pairs = []
        for pair in mark.args:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise pytest.UsageError(
                    f"pytest-multiarch: @pytest.mark.replication_pairs on "
                    f"{metafunc.definition.nodeid}: each pair is (primary, replica), got {pair!r}"
                )
            try:
                pairs.append((Platform.parse(str(pair[0])), Platform.parse(str(pair[1]))))
            except MultiarchError as exc:
                raise pytest.UsageError(
                    f"pytest-multiarch: @pytest.mark.replication_pairs on "
                    f"{metafunc.definition.nodeid}: {exc}"
                ) from None
    else:
        pairs = [(p, r) for p in state.archs for r in state.archs if p != r]
    if not pairs:
        pairs = [(state.archs[0], state.archs[0])]  # one arch requested: replicate to itself
    metafunc.parametrize(
        PAIR_ARG, pairs, indirect=True,
        ids=[f"{p.arch_name}-to-{r.arch_name}" for p, r in pairs],
    )


def _marker_archs(node: pytest.Item, name: str) -> set[Platform] | None:
    marks = list(node.iter_markers(name))
    if not marks:
        return None
    result: set[Platform] = set()
    for mark in marks:
        result.update(_parse_marker_names(mark, node.nodeid))
    return result


def _parse_marker_names(mark: pytest.Mark, where: str) -> list[Platform]:
    names: list[str] = []
    for arg in mark.args:
        names.extend(arg if isinstance(arg, list | tuple) else [arg])
    try:
        return [Platform.parse(str(n)) for n in names]
    except MultiarchError as exc:
        raise pytest.UsageError(
            f"pytest-multiarch: @pytest.mark.{mark.name} on {where}: {exc}"
        ) from None


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = get_state(config)
    if state.cfg.images:
        from pytest_multiarch.plugin.gate import make_gate_items

        gate_items = make_gate_items(session, state)
        items.extend(gate_items)
        # Let the terminal count them ("collected N items") like collected tests.
        config.hook.pytest_collectreport(
            report=pytest.CollectReport("multiarch-gate", "passed", None, list(gate_items))
        )
    if state.cfg.changed_only and state.cfg.baseline_path is not None:
        deselect_unchanged(state, items, config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    plat = item_platform(item)
    if plat is None:
        return
    item.user_properties.append(("arch", plat.arch_name))
    if item.get_closest_marker("multiarch_static") is not None:
        return  # static checks read the image; they need no emulator
    for needed in item_platforms(item):
        require_available(item, needed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    plat = item_platform(item)
    if plat is None:
        return report
    state = get_state(item.config)
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
        state.failed_items[item.nodeid] = True
        if call.excinfo is not None and "failure_class" not in props:
            item.user_properties.append(("failure_class", type(call.excinfo.value).__name__))
    if report.failed:
        for title, text in state.current_logs(item.nodeid):
            if text:
                report.sections.append((f"Captured container log {title}", text))
    if report.when == "teardown":
        state.forget_logs(item.nodeid)
    report.user_properties = list(item.user_properties)
    return report


class MatrixRecorder:
    """Feeds the matrix from test reports; registered per session by ``pytest_configure``.

    ``pytest_runtest_logreport`` runs in the xdist controller too, so the matrix sees every
    worker's results.
    """

    def __init__(self, state: State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        arch = props.get("arch")
        if not isinstance(arch, str):
            return
        self.state.matrix.add_time(arch, report.duration)
        factor = props.get("emulation_factor")
        if isinstance(factor, int | float):  # measured in an xdist worker
            self.state.matrix.line(arch).emulation_factor = float(factor)
        relevant = (
            report.when == "call"
            or (report.when == "setup" and not report.passed)
            or (report.when == "teardown" and report.failed)
        )
        if not relevant:
            return
        message = _failure_message(report)
        self.state.matrix.add(Outcome(
            test=_row_name(report.nodeid, arch), arch=arch, outcome=_outcome_of(report),
            duration=report.duration, failure_class=_str_or_none(props.get("failure_class")),
            message=message, image=_str_or_none(props.get("image")),
            digest=_str_or_none(props.get("digest")),
        ))
        facts = props.get("multiarch_facts")
        if isinstance(facts, dict) and isinstance(props.get("image"), str):
            self.state.matrix.note(str(props["image"]), arch, facts)


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


def _row_name(nodeid: str, arch: str) -> str:
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


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    state = get_state(config)
    lines = state.matrix.render(width=terminalreporter._tw.fullwidth)
    if lines:
        terminalreporter.write_sep("=", "multiarch matrix")
        for line in lines:
            terminalreporter.write_line(line)
    for line in state.summary_lines:
        terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is None or hasattr(session.config, "workerinput"):
        return
    state.finish(session.config)


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    # Session fixtures are torn down by pytest; this is the last line of defence.
    from pytest_multiarch.session.state import cleanup_all_sessions

    cleanup_all_sessions()
