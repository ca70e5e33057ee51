"""The public fixtures. Thin: each hands off to library code that owns the real work.

``arch`` itself is not defined here: the plugin parametrizes it (one ``Platform`` per requested
architecture) in ``pytest_generate_tests``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import pytest

from pytest_multiarch.platforms import Platform
from pytest_multiarch.plugin.options import get_state
from pytest_multiarch.session.settings import MultiarchConfig

if TYPE_CHECKING:
    from pytest_multiarch.audit.verdicts import AuditResult
    from pytest_multiarch.checks.replication import ReplicationPair
    from pytest_multiarch.checks.rest import RestFleet, RestService
    from pytest_multiarch.oci.resolve import ResolvedImage
    from pytest_multiarch.runners.base import Command, Container, Runner, RunResult
    from pytest_multiarch.session.state import State
    from pytest_multiarch.session.variants import VariantChecks


class ResolveImage(Protocol):
    """``multiarch_image(ref)``."""

    def __call__(self, ref: str) -> ResolvedImage: ...


class AuditImage(Protocol):
    """``multiarch_audit(ref, allow=())``."""

    def __call__(self, ref: str, allow: tuple[str, ...] = ()) -> AuditResult: ...


class RunImage(Protocol):
    """``multiarch_run(ref, cmd=None, *, check=False, env=None, timeout=None, mem_limit=None)``."""

    def __call__(
        self, ref: str, cmd: Command | None = None, *, check: bool = False,
        env: Mapping[str, str] | None = None, timeout: float | None = None,
        mem_limit: str | None = None,
    ) -> RunResult: ...


class StartContainer(Protocol):
    """``multiarch_container(ref, cmd=None, *, env=None, ports=(), mem_limit=None, name=None)``."""

    def __call__(
        self, ref: str, cmd: Command | None = None, *, env: Mapping[str, str] | None = None,
        ports: Sequence[int | str] = (), mem_limit: str | None = None, name: str | None = None,
    ) -> Container: ...


_TC = TypeVar("_TC")


class BindTestcontainer(Protocol):
    """``multiarch_testcontainer(container)``: the same testcontainers container, bound."""

    def __call__(self, container: _TC) -> _TC: ...


__all__ = [
    "AuditImage",
    "BindTestcontainer",
    "ResolveImage",
    "RunImage",
    "StartContainer",
    "_multiarch_pair",
    "multiarch_audit",
    "multiarch_config",
    "multiarch_container",
    "multiarch_image",
    "multiarch_platforms",
    "multiarch_replication",
    "multiarch_rest",
    "multiarch_rest_fleet",
    "multiarch_run",
    "multiarch_runner",
    "multiarch_shared_container",
    "multiarch_testcontainer",
    "multiarch_variants",
]


@pytest.fixture(scope="session")
def multiarch_config(pytestconfig: pytest.Config) -> MultiarchConfig:
    """The validated multiarch settings of this session."""
    return get_state(pytestconfig).cfg


@pytest.fixture(scope="session")
def multiarch_platforms(pytestconfig: pytest.Config) -> tuple[Platform, ...]:
    """Every architecture requested for this session, canonical and de-duplicated."""
    return get_state(pytestconfig).archs


def require_available(item: pytest.Item, plat: Platform) -> None:
    """Skip *item* when *plat* cannot run here, naming the fix; fail it with --arch-required."""
    state = get_state(item.config)
    status = state.status(plat)
    if status.ok:
        return
    message = f"{plat.arch_name} cannot run here: {status.reason}"
    if status.fix:
        message += f"; fix: {status.fix}"
    if state.cfg.arch_required:
        item.user_properties.append(("failure_class", "ArchUnavailable"))
        pytest.fail(message + " (failed because --arch-required is set)", pytrace=False)
    pytest.skip(message)


def _require_arch(arch: Platform | None) -> Platform:
    if arch is None:  # the skipped placeholder of an empty @archs() selection
        pytest.skip("no architecture selected")
    return arch


@pytest.fixture
def multiarch_image(request: pytest.FixtureRequest, arch: Platform) -> ResolveImage:
    """``multiarch_image(ref)``: resolve *ref* to this arch's variant (digest, config, layers).

    Registry references and ``oci:DIR[:TAG]`` layouts are both accepted.
    """
    plat = _require_arch(arch)
    state = get_state(request.config)

    def resolve_for_arch(ref: str) -> ResolvedImage:
        from pytest_multiarch.session.images import resolve_variant

        resolved = resolve_variant(state, ref, plat)
        state.digests[request.node.nodeid] = resolved.digest
        return resolved

    return resolve_for_arch


@pytest.fixture
def multiarch_audit(request: pytest.FixtureRequest, arch: Platform) -> AuditImage:
    """``multiarch_audit(ref, allow=())``: static scan of this arch's variant; see AuditResult.

    ``assert result.ok, result.format()`` fails with the readable verdict paragraph.
    """
    plat = _require_arch(arch)
    state = get_state(request.config)
    marker_allow = tuple(
        str(glob) for mark in request.node.iter_markers("multiarch_allow") for glob in mark.args
    )

    def audit(ref: str, allow: tuple[str, ...] = ()) -> AuditResult:
        from pytest_multiarch.session.images import audit_variant, resolve_variant

        state.digests[request.node.nodeid] = resolve_variant(state, ref, plat).digest
        return audit_variant(
            state, ref, plat, allow=(*state.cfg.allow_foreign, *marker_allow, *allow)
        )

    return audit


@pytest.fixture
def multiarch_runner(request: pytest.FixtureRequest, arch: Platform) -> Runner:
    """The runner executing containers for this arch (local engine, remote host or rootfs)."""
    return get_state(request.config).runner(_require_arch(arch))


@pytest.fixture
def multiarch_run(request: pytest.FixtureRequest, arch: Platform) -> RunImage:
    """``multiarch_run(ref, cmd=None, *, check=False, env=None, timeout=None, mem_limit=None)``
    → a ``RunResult`` (exit code, stdout, stderr, duration).

    The image runs by digest for this arch.  With ``check=True`` a failure raises the classified
    error (ExecFormatError, EmulatorMissing, EmulatorCrash, OutOfMemory, …).
    """
    plat = _require_arch(arch)
    state = get_state(request.config)

    def run(ref: str, cmd: Command | None = None, *, check: bool = False,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            mem_limit: str | None = None) -> RunResult:
        from pytest_multiarch.session.images import run_variant

        result, digest = run_variant(state, ref, plat, cmd, check=check, env=env,
                                     timeout=timeout, mem_limit=mem_limit)
        state.digests[request.node.nodeid] = digest
        if result.logs:
            state.logs.setdefault(request.node.nodeid, []).append((f"{ref} [{plat}]", result.logs))
        return result

    return run


@contextlib.contextmanager
def _containers(state: State, plat: Platform, nodeid: str) -> Iterator[StartContainer]:
    from pytest_multiarch.session.images import start_variant

    started: list[Container] = []

    def start(
        ref: str, cmd: Command | None = None, *, env: Mapping[str, str] | None = None,
        ports: Sequence[int | str] = (), mem_limit: str | None = None, name: str | None = None,
    ) -> Container:
        container, digest = start_variant(state, ref, plat, cmd, env=env, ports=ports,
                                          mem_limit=mem_limit, name=name)
        state.digests[nodeid] = digest
        started.append(container)
        state.add_log_source(nodeid, lambda: {container.name: container.logs()})
        return container

    try:
        yield start
    finally:
        for container in reversed(started):
            # Test containers are thrown away: a short grace period, not docker's 10 s. A stop
            # that fails leaves a labelled container the runner's close() (or the next run's
            # reaper) removes; it must not hide the test's own outcome.
            with contextlib.suppress(Exception):
                container.stop(timeout=2)


@pytest.fixture
def multiarch_container(
    request: pytest.FixtureRequest, arch: Platform
) -> Iterator[StartContainer]:
    """``multiarch_container(ref, cmd=None, *, env=None, ports=(), mem_limit=None, name=None)``:
    a started container of this arch's variant.

    It offers ``exec(cmd)`` (a ``RunResult``), ``logs()`` and ``host_port(port)``, and is removed
    after the test; its logs join the report of a failed test.
    """
    state = get_state(request.config)
    with _containers(state, _require_arch(arch), request.node.nodeid) as start:
        yield start


@pytest.fixture(scope="session")
def multiarch_shared_container(
    request: pytest.FixtureRequest, arch: Platform
) -> Iterator[StartContainer]:
    """Like ``multiarch_container`` but started once per arch and image for the whole session.

    Calls with the same reference and options return the same container.
    """
    state = get_state(request.config)
    cache: dict[tuple[str, str], Container] = {}
    with _containers(state, _require_arch(arch), f"session:{arch}") as start:

        def shared(
            ref: str, cmd: Command | None = None, *, env: Mapping[str, str] | None = None,
            ports: Sequence[int | str] = (), mem_limit: str | None = None,
            name: str | None = None,
        ) -> Container:
            key = (ref, repr((cmd, sorted((env or {}).items()), list(ports), mem_limit, name)))
            if key not in cache:
                cache[key] = start(ref, cmd, env=env, ports=ports, mem_limit=mem_limit,
                                   name=name)
            return cache[key]

        yield shared


@pytest.fixture
def multiarch_testcontainer(
    request: pytest.FixtureRequest, arch: Platform
) -> Iterator[BindTestcontainer]:
    """``multiarch_testcontainer(container)``: a testcontainers container bound to this arch.

    Give it an unstarted ``DockerContainer(ref)`` (or a module class such as ``MySqlContainer``);
    it comes back with the arch's variant by digest, the platform, the memory limit, the session
    labels, an init under emulation and readiness timeouts scaled by the emulation factor.  Start
    it as before (``with ... as c:``); it is removed after the test at the latest.
    """
    from pytest_multiarch.checks import testcontainers as tc
    from pytest_multiarch.session.bindings import bind_testcontainer

    plat = _require_arch(arch)
    state = get_state(request.config)
    nodeid = request.node.nodeid
    bound: list[object] = []

    def bind(container: _TC) -> _TC:
        bind_testcontainer(state, container, plat)  # rewrites it in place (or refuses it)
        state.digests[nodeid] = getattr(container, tc.BOUND_ATTR).digest
        bound.append(container)
        state.add_log_source(nodeid, lambda: tc.logs(container))
        return container

    try:
        yield bind
    finally:
        for container in reversed(bound):
            tc.remove(container)


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

    plat = _require_arch(arch)
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


@pytest.fixture
def multiarch_variants(request: pytest.FixtureRequest) -> VariantChecks:
    """Index hygiene, attachments and package skew of an image across the requested archs:
    ``multiarch_variants.check(ref)``, ``.package_skew(ref)``, ``.attached(ref, arch)`` …

    ``@pytest.mark.multiarch_allow_packages(*globs)`` lets those packages differ.
    """
    from pytest_multiarch.session.variants import VariantChecks

    marker = request.node.get_closest_marker("multiarch_allow_packages")
    allow = tuple(str(glob) for glob in marker.args) if marker else ()
    return VariantChecks(get_state(request.config), allow)
