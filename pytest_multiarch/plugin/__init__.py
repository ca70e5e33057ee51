"""pytest wiring: options, parametrization over archs, availability, the matrix and the report.

Kept thin: everything that does real work lives in plain modules (platforms, registry, audit,
runners, report) and in :mod:`pytest_multiarch.plugin.fixtures`,
:mod:`pytest_multiarch.plugin.check_fixtures` and :mod:`pytest_multiarch.plugin.gate`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.plugin import hookspecs
from pytest_multiarch.plugin import options as _config
from pytest_multiarch.plugin.check_fixtures import *  # noqa: F403 - registers the check fixtures
from pytest_multiarch.plugin.fixtures import *  # noqa: F403 - registers the public fixtures
from pytest_multiarch.plugin.fixtures import require_available
from pytest_multiarch.plugin.items import ARCH_ARG, PAIR_ARG, item_platform, item_platforms
from pytest_multiarch.plugin.options import STATE_KEY, get_state
from pytest_multiarch.plugin.session import PLUGIN_NAME, MultiarchSession
from pytest_multiarch.runners.base import Runner
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
    from pytest_multiarch.plugin import signals

    signals.install()  # SIGTERM (a cancelled CI job) cleans up like Ctrl-C
    cfg = _config.load(config)
    archs = config.hook.pytest_multiarch_select_archs(config=config, archs=cfg.archs.value)

    def make_runner(platform: Platform) -> Runner | None:
        runner: Runner | None = config.hook.pytest_multiarch_make_runner(
            config=config, platform=platform
        )
        return runner

    state = State(
        cfg, tuple(archs) if archs else cfg.archs.value, make_runner=make_runner,
        on_report=lambda document: config.hook.pytest_multiarch_report(
            config=config, report=document
        ),
    )
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(MultiarchSession(state), PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_multiarch.plugin import xdist as xdist_support

        config.pluginmanager.register(xdist_support.XdistSupport(state), "multiarch-xdist")
    if config.pluginmanager.hasplugin("html"):  # its hookspecs exist only when it is loaded
        from pytest_multiarch.plugin.html import HtmlColumns

        config.pluginmanager.register(HtmlColumns(state), "multiarch-html")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    from pytest_multiarch.plugin import signals

    signals.uninstall()  # after the session's own unconfigure has cleaned up


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``--multiarch-gate-only``: collect no test files, run only the generated gate."""
    if config.stash.get(STATE_KEY, None) is not None and get_state(config).cfg.gate_only:
        return True
    return None


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
