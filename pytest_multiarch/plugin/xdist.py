"""pytest-xdist integration: one arch per worker, so session-scoped containers start once.

With ``-n N`` xdist's default ``load`` scheduling would send tests of one arch to every worker,
and each worker would start that arch's session-scoped containers again.  Grouping work by arch
(like ``--dist loadscope`` groups by module) keeps one container set per arch and lets emulated
archs run side by side.  Only ``--dist load`` (what ``-n`` implies) is replaced; an explicit
other ``--dist`` mode is respected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State


def arch_of_nodeid(nodeid: str, arch_names: frozenset[str]) -> str | None:
    """The requested arch a node id was parametrized with, if any."""
    last = nodeid.rsplit("::", 1)[-1]
    if "[" not in last:
        return None
    params = last.split("[", 1)[1].rstrip("]")
    for token in params.split("-"):
        if token in arch_names:
            return token
    return None


class XdistSupport:
    """Registered by the plugin only when xdist is active."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.arch_names = frozenset(p.arch_name for p in state.archs)
        self._collected = False

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Every worker collects the same ids; the first list is the shard's collected set."""
        if self._collected:
            return
        self._collected = True
        from pytest_multiarch.plugin.session import row_of_nodeid

        rows = [row_of_nodeid(nodeid, self.arch_names) for nodeid in ids]
        self.state.record_collection([r for r in rows if r is not None], [])

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "load" or len(self.arch_names) < 2:
            return None
        from xdist.scheduler import LoadScopeScheduling

        arch_names = self.arch_names

        class ArchScheduling(LoadScopeScheduling):  # type: ignore[misc]
            """Work units are archs; tests with no arch keep xdist's module grouping."""

            def _split_scope(self, nodeid: str) -> str:
                arch = arch_of_nodeid(nodeid, arch_names)
                return f"arch:{arch}" if arch else str(nodeid.rsplit("::", 1)[0])

        return ArchScheduling(config, log)
