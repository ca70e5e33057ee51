"""The public fixtures of an image's variants. Thin: each hands off to library code that owns
the real work.  The fixtures of the application checks (REST, replication) are in
:mod:`.check_fixtures`.

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
    "multiarch_audit",
    "multiarch_config",
    "multiarch_container",
    "multiarch_image",
    "multiarch_platforms",
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


def require_arch(arch: Platform | None) -> Platform:
    if arch is None:  # the skipped placeholder of an empty @archs() selection
        pytest.skip("no architecture selected")
    return arch


@pytest.fixture
def multiarch_image(request: pytest.FixtureRequest, arch: Platform) -> ResolveImage:
    """``multiarch_image(ref)``: resolve *ref* to this arch's variant (digest, config, layers).

    Registry references and ``oci:DIR[:TAG]`` layouts are both accepted.
    """
    plat = require_arch(arch)
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
    plat = require_arch(arch)
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
    return get_state(request.config).runner(require_arch(arch))


@pytest.fixture
def multiarch_run(request: pytest.FixtureRequest, arch: Platform) -> RunImage:
    """``multiarch_run(ref, cmd=None, *, check=False, env=None, timeout=None, mem_limit=None)``
    → a ``RunResult`` (exit code, stdout, stderr, duration).

    The image runs by digest for this arch.  With ``check=True`` a failure raises the classified
    error (ExecFormatError, EmulatorMissing, EmulatorCrash, OutOfMemory, …).
    """
    plat = require_arch(arch)
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
    with _containers(state, require_arch(arch), request.node.nodeid) as start:
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
    with _containers(state, require_arch(arch), f"session:{arch}") as start:

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

    plat = require_arch(arch)
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
