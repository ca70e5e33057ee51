"""The fixtures of the application checks: the REST service, its fleet, MariaDB replication.

Each starts what :mod:`pytest_multiarch.checks` tests from the images the ini keys
``multiarch_service_image`` and ``multiarch_db_image`` name, and hands off to the check's own
context manager; the fixtures of a single image's variant are in :mod:`.fixtures`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_multiarch.platforms import Platform
from pytest_multiarch.plugin.fixtures import require_arch, require_available
from pytest_multiarch.plugin.options import get_state

if TYPE_CHECKING:
    from pytest_multiarch.checks.replication import ReplicationPair
    from pytest_multiarch.checks.rest import RestFleet, RestService

__all__ = ["_multiarch_pair", "multiarch_replication", "multiarch_rest", "multiarch_rest_fleet"]


def _ini_image(config: pytest.Config, name: str, fixture: str) -> str:
    value = str(config.getini(name)).strip()
    if not value:
        raise pytest.UsageError(
            f"pytest-multiarch: the {fixture} fixture needs the ini option {name} = REF "
            "(the multi-arch image to start), e.g. in pytest.ini"
        )
    return value


@pytest.fixture
def multiarch_rest(request: pytest.FixtureRequest, arch: Platform) -> Iterator[RestService]:
    """The REST service of ini ``multiarch_service_image`` running for this arch, ready.

    Its MariaDB (ini ``multiarch_db_image``; ``none`` for a service without one) runs beside it
    on a private network.  Readiness is a real ``GET /healthz``, with a timeout scaled by the
    arch's emulation factor.  Gives an object with ``.session`` (a ``requests.Session`` bound to
    the base URL), ``.get(path)``, ``.post(path, json=…)``, ``.stop_database()`` and
    ``.record(method, path)`` (the answer is kept in the report for ``pytest-multiarch merge``).
    """
    from pytest_multiarch.session.images import resolve_variant, rest_service_for

    plat = require_arch(arch)
    state = get_state(request.config)
    service = _ini_image(request.config, "multiarch_service_image", "multiarch_rest")
    database = _db_image(request.config, "multiarch_rest")
    state.digests[request.node.nodeid] = resolve_variant(state, service, plat).digest
    with rest_service_for(state, service, database, plat, "multiarch_rest") as running:
        state.add_log_source(request.node.nodeid, running.logs)
        state.rest_records[request.node.nodeid] = running.recorded  # read by makereport
        yield running


def _db_image(config: pytest.Config, fixture: str) -> str | None:
    """The ini ``multiarch_db_image``; ``none`` starts the service without a database."""
    value = _ini_image(config, "multiarch_db_image", fixture)
    return None if value.lower() == "none" else value


@pytest.fixture
def _multiarch_pair(request: pytest.FixtureRequest) -> tuple[Platform, Platform]:
    pair: tuple[Platform, Platform] = request.param
    return pair


@pytest.fixture
def multiarch_replication(
    request: pytest.FixtureRequest, _multiarch_pair: tuple[Platform, Platform]
) -> Iterator[ReplicationPair]:
    """A MariaDB primary on one arch replicating (GTID) to a replica on another, running.

    Parametrized over the ordered pairs of the requested archs (ids ``arm64-to-amd64``), or the
    pairs named by ``@pytest.mark.replication_pairs(("arm64", "amd64"), …)``.  Gives
    ``.run_workload(rows, fault=None)``, ``.wait_caught_up()``, ``.compare()`` (a verdict with
    ``.ok`` and ``.message``), ``.restart_replica()`` and ``.restart_primary()``.
    """
    from pytest_multiarch.checks.replication import replication_pair
    from pytest_multiarch.session.images import emulation_factor, engine_client, resolve_variant

    primary, replica = _multiarch_pair
    state = get_state(request.config)
    database = _ini_image(request.config, "multiarch_db_image", "multiarch_replication")
    factor = max(emulation_factor(state, database, primary),
                 emulation_factor(state, database, replica))
    pair = replication_pair(
        engine_client(state, primary, "multiarch_replication"),
        primary_platform=primary, replica_platform=replica,
        primary_image=resolve_variant(state, database, primary).pinned,
        replica_image=resolve_variant(state, database, replica).pinned,
        session_id=state.session_id, emulation_factor=factor,
    )
    with pair as running:
        state.add_log_source(request.node.nodeid, running.logs)
        yield running


@pytest.fixture
def multiarch_rest_fleet(request: pytest.FixtureRequest) -> Iterator[RestFleet]:
    """The REST service started on every requested arch at once, to compare their answers.

    ``fleet.assert_same("GET", "/offerings")`` asks every arch and fails naming each arch whose
    answer (status, Content-Type, JSON body compared structurally) differs from the reference
    arch's (``--multiarch-reference-arch``, default the first of ``--arch``).
    """
    from pytest_multiarch.checks.rest import RestFleet
    from pytest_multiarch.session.images import rest_service_for

    state = get_state(request.config)
    service = _ini_image(request.config, "multiarch_service_image", "multiarch_rest_fleet")
    database = _db_image(request.config, "multiarch_rest_fleet")
    for plat in state.archs:
        require_available(request.node, plat)
    reference = state.cfg.reference_arch or state.archs[0]
    running: dict[str, RestService] = {}
    with contextlib.ExitStack() as stack:
        for plat in state.archs:
            running[plat.architecture] = stack.enter_context(
                rest_service_for(state, service, database, plat, "multiarch_rest_fleet")
            )
        for svc in running.values():
            state.add_log_source(request.node.nodeid, svc.logs)
        yield RestFleet(running, reference.architecture)


