"""The public fixtures. Thin: each hands off to library code that owns the real work.

``arch`` itself is not defined here: the plugin parametrizes it (one ``Platform`` per requested
architecture) in ``pytest_generate_tests``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiarch.config import MultiarchConfig, get_state
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:
    from pytest_multiarch.audit import AuditResult
    from pytest_multiarch.resolve import ResolvedImage
    from pytest_multiarch.runners.base import RunResult

__all__ = [
    "multiarch_audit",
    "multiarch_config",
    "multiarch_container",
    "multiarch_image",
    "multiarch_platforms",
    "multiarch_run",
    "multiarch_runner",
    "multiarch_shared_container",
]


@pytest.fixture(scope="session")
def multiarch_config(pytestconfig: pytest.Config) -> MultiarchConfig:
    """The validated multiarch settings of this session."""
    return get_state(pytestconfig).cfg


@pytest.fixture(scope="session")
def multiarch_platforms(pytestconfig: pytest.Config) -> tuple[Platform, ...]:
    """Every architecture requested for this session, canonical and de-duplicated."""
    return get_state(pytestconfig).archs


def _require_arch(arch: Platform | None) -> Platform:
    if arch is None:  # the skipped placeholder of an empty @archs() selection
        pytest.skip("no architecture selected")
    return arch


@pytest.fixture
def multiarch_image(
    request: pytest.FixtureRequest, arch: Platform
) -> Callable[[str], ResolvedImage]:
    """``multiarch_image(ref)``: resolve *ref* to this arch's variant (digest, config, layers).

    Registry references and ``oci:DIR[:TAG]`` layouts are both accepted.
    """
    plat = _require_arch(arch)
    state = get_state(request.config)

    def resolve_for_arch(ref: str) -> ResolvedImage:
        from pytest_multiarch.images import resolve_variant

        resolved = resolve_variant(state, ref, plat)
        state.digests[request.node.nodeid] = resolved.digest
        return resolved

    return resolve_for_arch


@pytest.fixture
def multiarch_audit(
    request: pytest.FixtureRequest, arch: Platform
) -> Callable[..., AuditResult]:
    """``multiarch_audit(ref, allow=())``: static scan of this arch's variant; see AuditResult."""
    plat = _require_arch(arch)
    state = get_state(request.config)
    marker_allow = tuple(
        str(glob) for mark in request.node.iter_markers("multiarch_allow") for glob in mark.args
    )

    def audit(ref: str, allow: tuple[str, ...] = ()) -> AuditResult:
        from pytest_multiarch.images import audit_variant, resolve_variant

        state.digests[request.node.nodeid] = resolve_variant(state, ref, plat).digest
        return audit_variant(
            state, ref, plat, allow=(*state.cfg.allow_foreign, *marker_allow, *allow)
        )

    return audit


@pytest.fixture
def multiarch_runner(request: pytest.FixtureRequest, arch: Platform) -> Any:
    """The runner executing containers for this arch (local engine, remote host or rootfs)."""
    return get_state(request.config).runner(_require_arch(arch))


@pytest.fixture
def multiarch_run(
    request: pytest.FixtureRequest, arch: Platform
) -> Callable[..., RunResult]:
    """``multiarch_run(ref, cmd, check=False, **options)`` → exit code, stdout, stderr, duration.

    The image runs by digest for this arch.  With ``check=True`` a failure raises the classified
    error (ExecFormatError, EmulatorMissing, EmulatorCrash, OutOfMemory, …).
    """
    plat = _require_arch(arch)
    state = get_state(request.config)

    def run(ref: str, cmd: str | list[str] | None = None, *, check: bool = False,
            **options: Any) -> RunResult:
        from pytest_multiarch.images import run_variant

        result, digest = run_variant(state, ref, plat, cmd, check=check, **options)
        state.digests[request.node.nodeid] = digest
        if result.logs:
            state.logs.setdefault(request.node.nodeid, []).append((f"{ref} [{plat}]", result.logs))
        return result

    return run


@contextlib.contextmanager
def _containers(state: Any, plat: Platform, nodeid: str) -> Iterator[Callable[..., Any]]:
    from pytest_multiarch.images import start_variant

    started: list[Any] = []

    def start(ref: str, **options: Any) -> Any:
        container, digest = start_variant(state, ref, plat, **options)
        state.digests[nodeid] = digest
        started.append(container)
        return container

    try:
        yield start
    finally:
        for container in reversed(started):
            with contextlib.suppress(Exception):
                state.logs.setdefault(nodeid, []).append((container.name, container.logs()))
            with contextlib.suppress(Exception):
                container.stop()


@pytest.fixture
def multiarch_container(
    request: pytest.FixtureRequest, arch: Platform
) -> Generator[Callable[..., Any], None, None]:
    """``multiarch_container(ref, **options)``: a started container of this arch's variant.

    It offers ``exec(cmd)``, ``logs()`` and ``host_port(port)``, and is removed after the test;
    its logs join the report of a failed test.
    """
    state = get_state(request.config)
    with _containers(state, _require_arch(arch), request.node.nodeid) as start:
        yield start


@pytest.fixture(scope="session")
def multiarch_shared_container(
    request: pytest.FixtureRequest, arch: Platform
) -> Generator[Callable[..., Any], None, None]:
    """Like ``multiarch_container`` but started once per arch and image for the whole session.

    Calls with the same reference and options return the same container.
    """
    state = get_state(request.config)
    cache: dict[tuple[str, str], Any] = {}
    with _containers(state, _require_arch(arch), f"session:{arch}") as start:

        def shared(ref: str, **options: Any) -> Any:
            key = (ref, repr(sorted(options.items())))
            if key not in cache:
                cache[key] = start(ref, **options)
            return cache[key]

        yield shared
