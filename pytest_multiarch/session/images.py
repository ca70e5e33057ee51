"""Session-level operations on one image and one arch: resolve, audit, run, start, gate checks.

This is where the plain library pieces meet the session state (its registry client, runners and
caches).  No pytest here: fixtures and gate items call these functions.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import AuditFailed, MultiarchError
from pytest_multiarch.oci.resolve import (
    OpenedSource,
    ResolvedImage,
    check_config_platform,
    list_platforms,
    open_source,
    resolve,
)
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:
    from pytest_multiarch.audit.verdicts import AuditResult
    from pytest_multiarch.checks.rest import RestService
    from pytest_multiarch.oci.content import Manifest
    from pytest_multiarch.runners.base import Command, Container, Runner, RunResult
    from pytest_multiarch.session.state import State


__all__ = ["AuditFailed", "ImageCache", "VariantFacts"]  # AuditFailed: its old home


@dataclass(frozen=True, slots=True)
class VariantFacts:
    """What a baseline records of one resolved variant: plain strings, no client objects."""

    digest: str
    config: str
    layers: tuple[str, ...]


@dataclass(eq=False, slots=True)
class ImageCache:
    """The images one session touched, keyed by the reference text the user gave."""

    #: reference text -> its opened source (registry client or OCI layout) and parsed reference
    sources: dict[str, OpenedSource] = field(default_factory=dict)
    #: reference text -> its top-level manifest (usually an index), fetched once
    manifests: dict[str, Manifest] = field(default_factory=dict)
    #: reference text -> the platforms its index lists (empty when they cannot be listed)
    index_platforms: dict[str, list[str]] = field(default_factory=dict)
    #: (reference text, arch name) -> the resolved variant
    resolved: dict[tuple[str, str], ResolvedImage] = field(default_factory=dict)

    def variant_facts(self) -> dict[tuple[str, str], VariantFacts]:
        """(reference text, arch name) -> digests of every variant resolved so far."""
        return {
            key: VariantFacts(r.digest, r.config_digest, tuple(layer.digest for layer in r.layers))
            for key, r in self.resolved.items()
        }


def opened(state: State, text: str) -> OpenedSource:
    """The image source for *text* (registry reference or ``oci:DIR[:TAG]``), cached."""
    cache = state.images.sources
    if text not in cache:
        cache[text] = open_source(text, client=state.registry())
    return cache[text]


def resolve_variant(state: State, text: str, plat: Platform) -> ResolvedImage:
    """*text*'s variant for *plat*; raises PlatformNotInIndex naming what the index has."""
    key = (text, plat.arch_name)
    resolved = state.images.resolved.get(key)
    if resolved is None:
        source, ref = opened(state, text)
        resolved = resolve(source, ref, plat, manifest=top_manifest(state, text))
        state.images.resolved[key] = resolved
    return resolved


def top_manifest(state: State, text: str) -> Manifest:
    """The manifest *text* names (usually an index), fetched once per session."""
    cache = state.images
    if text not in cache.manifests:
        source, ref = opened(state, text)
        manifest = source.get_manifest(ref)
        cache.manifests[text] = manifest
        try:
            plats = list_platforms(source, ref, manifest=manifest)
            cache.index_platforms[text] = [str(p) for p in plats]
        except MultiarchError:  # a single-platform manifest lists none; resolve() says why
            cache.index_platforms[text] = []
    return cache.manifests[text]


def audit_variant(
    state: State, text: str, plat: Platform, *, allow: tuple[str, ...] = ()
) -> AuditResult:
    """The static audit of *text*'s *plat* variant (layer scans cached by layer digest)."""
    from pytest_multiarch.audit.verdicts import audit_variant as audit

    resolved = resolve_variant(state, text, plat)
    source, ref = opened(state, text)
    variant_ref = ref.with_digest(resolved.digest)
    layers = [
        (layer.digest, layer.media_type, functools.partial(source.open_blob, variant_ref, layer))
        for layer in resolved.layers
    ]
    cache_dir = state.cache_subdir("audit")
    return audit(
        resolved.pinned, plat, resolved.config, layers, host=Platform.host(), allow=allow,
        cache_dir=cache_dir,
    )


def runner_for(state: State, text: str, plat: Platform) -> Runner:
    """The session runner for *plat*; OCI layouts run engine-less (an engine cannot pull them)."""
    from pytest_multiarch.oci.layout import OciLayout
    from pytest_multiarch.runners.docker.engine import EngineRunner
    from pytest_multiarch.runners.factory import rootfs_runner

    runner = state.runner(plat)
    source, _ = opened(state, text)
    if isinstance(source, OciLayout) and isinstance(runner, EngineRunner):
        if plat not in state.layout_runners:
            state.layout_runners[plat] = rootfs_runner(state, plat)
            state.add_closer(state.layout_runners[plat].close)
        return state.layout_runners[plat]
    return runner


def run_variant(
    state: State, text: str, plat: Platform, cmd: Command | None = None, *,
    check: bool = False, env: Mapping[str, str] | None = None, timeout: float | None = None,
    mem_limit: str | None = None,
) -> tuple[RunResult, str]:
    """Run *cmd* in *text*'s *plat* variant, by digest. Returns the result and the digest.

    An exec format error carries what the static audit says the binary really is.
    """
    from pytest_multiarch.errors import (
        CommandFailed,
        CommandNotFound,
        ExecFormatError,
        LoaderMissing,
    )
    from pytest_multiarch.runners.classify import check_runs

    resolved = resolve_variant(state, text, plat)
    try:
        result = runner_for(state, text, plat).run(
            resolved.pinned, plat, cmd, env=env, timeout=timeout,
            mem_limit=mem_limit or state.cfg.mem_limit,
        )
        _note_host_cpu(state, resolved.pinned, plat)
        if check:
            check_runs(result)
    except ExecFormatError as exc:
        hint = _audit_hint(state, text, plat)
        if not hint:
            raise
        enriched = ExecFormatError(f"{exc} The static audit says: {hint}")
        enriched.logs = exc.logs
        raise enriched from None
    except (CommandFailed, CommandNotFound) as exc:
        # "No such file or directory" for a binary that is there: the audit knows whether its
        # dynamic loader is missing, which no exit code can tell.
        loader = _missing_loader(state, text, plat) if cmd is None else ""
        if not loader:
            raise
        missing = LoaderMissing(
            f"{loader}: the default command cannot start (this is not the application failing). "
            "Install the loader (the libc package of this architecture) in the image, or link "
            "the binary statically."
        )
        missing.logs = exc.logs
        raise missing from None
    return result, resolved.digest


def _note_host_cpu(state: State, image: str, plat: Platform) -> None:
    """Once per ``--arch-host`` arch: read the native engine's CPU, name it in the matrix and
    say when it is newer than the level under test (a pass there does not cover older CPUs)."""
    if plat not in state.cfg.arch_hosts or plat in state.host_cpus:
        return
    runner = state.runner(plat)
    read = getattr(runner, "host_cpu", None)
    found = read(image, plat) if read is not None else None
    state.host_cpus[plat] = found
    if found is None:
        return
    # The remote engine's API does not show its CPU: the report's run.cpu gets what cpuinfo says.
    state.matrix.line(plat.arch_name).run["cpu"] = f"{found.name} ({found.platform.arch_name})"
    if found.newer_than(plat):
        state.summary_lines.append(
            f"multiarch: {plat.arch_name} ran natively on {found.name}, which implements "
            f"{found.platform}: newer than {plat} promises, so a pass there does not cover the "
            f"older machines; emulate them too (--arch={plat.arch_name} without --arch-host, "
            "or --arch-cpu) to catch code built for a newer CPU"
        )


def start_variant(
    state: State, text: str, plat: Platform, cmd: Command | None = None, *,
    env: Mapping[str, str] | None = None, ports: Sequence[int | str] = (),
    mem_limit: str | None = None, name: str | None = None,
) -> tuple[Container, str]:
    """Start *text*'s *plat* variant, by digest. Returns the container and the digest."""
    resolved = resolve_variant(state, text, plat)
    container = runner_for(state, text, plat).start(
        resolved.pinned, plat, cmd, env=env, ports=ports,
        mem_limit=mem_limit or state.cfg.mem_limit, name=name,
    )
    return container, resolved.digest


def _audit_hint(state: State, text: str, plat: Platform) -> str:
    """What the audit says about the variant's entrypoint, for an exec format error."""
    try:
        audit = audit_variant(state, text, plat)
    except Exception:  # the hint is a nicety; the classified error stands without it
        return ""
    return " ".join(f.message for f in audit.failures[:1])


def _missing_loader(state: State, text: str, plat: Platform) -> str:
    """The audit's loader-missing finding of the variant's entrypoint, or ""."""
    from pytest_multiarch.audit.findings import Kind

    try:
        audit = audit_variant(state, text, plat, allow=state.cfg.allow_foreign)
    except MultiarchError:  # the run's own classification stands without the audit's view
        return ""
    found = [f.message for f in audit.failures if f.kind is Kind.LOADER_MISSING]
    return found[0] if found else ""


def emulation_factor(state: State, text: str, plat: Platform) -> float:
    """How many times slower *plat* runs here, measured once with *text*'s variants (cached).

    The figure joins the matrix and the JSON report; readiness timeouts are scaled by it.
    """
    from pytest_multiarch.runners.emulation import measure

    if plat not in state.emulation:
        host = Platform.host()
        try:
            emulated = resolve_variant(state, text, plat).pinned
            native = resolve_variant(state, text, host).pinned
            found = measure(runner_for(state, text, plat), plat, emulated_image=emulated,
                            native_image=native, native=host,
                            cache_dir=state.cache_subdir("emulation"))
            state.emulation[plat] = found.factor
        except Exception:  # a side measurement: the default factor is a safe answer
            from pytest_multiarch.runners.emulation import DEFAULT_FACTOR

            state.emulation[plat] = 1.0 if plat == host else DEFAULT_FACTOR
        state.set_emulation_factor(plat, state.emulation[plat])
        setter = getattr(runner_for(state, text, plat), "set_emulation_factor", None)
        if setter is not None:  # default run deadlines scale by the measured factor
            setter(plat, state.emulation[plat])
    return state.emulation[plat]


def engine_client(state: State, plat: Platform, what: str) -> Any:
    """*plat*'s engine runner, through which checks start their containers (same labels,
    platform check, classification and clean-up); services with ports need an engine."""
    runner = state.runner(plat)
    if getattr(runner, "client", None) is None:
        raise MultiarchError(
            f"{what} needs a container engine for {plat}, but the runner is "
            f"{state.runner(plat).describe(plat)} without one (engine-less rootfs runner). "
            "Start dockerd or podman, or use --engine=docker"
        )
    return runner


def rest_service_for(
    state: State, service: str, database: str | None, plat: Platform, what: str
) -> AbstractContextManager[RestService]:
    """*service*'s *plat* variant with *database*'s beside it (None: no database), both by
    digest, ready when entered; readiness waits scale with the emulation factor. *what* names
    the caller."""
    from pytest_multiarch.checks.rest import rest_service

    return rest_service(
        engine_client(state, plat, what), platform=plat,
        service_image=resolve_variant(state, service, plat).pinned,
        db_image=resolve_variant(state, database, plat).pinned if database else "",
        with_database=database is not None,
        session_id=state.session_id,
        emulation_factor=emulation_factor(state, database or service, plat),
    )


# -- the generated gate checks -----------------------------------------------------------------


def gate_platform(state: State, text: str, plat: Platform) -> str:
    """The index has an entry for *plat*."""
    return resolve_variant(state, text, plat).digest


def gate_config(state: State, text: str, plat: Platform) -> str:
    """The variant's config says the platform its index entry says."""
    resolved = resolve_variant(state, text, plat)
    check_config_platform(resolved)
    return resolved.digest


def gate_binaries(state: State, text: str, plat: Platform) -> str:
    """Every ELF file, the entrypoint and its loader are for *plat*."""
    result = audit_variant(state, text, plat, allow=state.cfg.allow_foreign)
    if not result.ok:
        raise AuditFailed(result.format(limit=10))
    return resolve_variant(state, text, plat).digest


def gate_smoke(state: State, text: str, plat: Platform) -> str:
    """The variant's default command (or ``--multiarch-smoke-cmd``) runs.

    The rule for long-running commands: a command that exits 0 passes, one that exits non-zero
    fails (classified), and one still running after ``--multiarch-smoke-timeout`` native seconds
    times the emulation factor is a service that started and stays up: it passes, and the summary
    says so.  A command that hangs instead of serving is told apart only by a smoke command that
    exits (``--multiarch-smoke-cmd``).
    """
    from pytest_multiarch.errors import RunTimeout

    cmd = list(state.cfg.smoke_cmd) if state.cfg.smoke_cmd else None
    factor = emulation_factor(state, text, plat) if plat != Platform.host() else 1.0
    alive_after = state.cfg.smoke_timeout * max(1.0, factor)
    try:
        _, digest = run_variant(state, text, plat, cmd, check=True, timeout=alive_after)
    except RunTimeout:
        # a note on the test's report (user property), so an xdist controller says it too
        state.notes[(text, plat.arch_name)] = (
            f"multiarch: smoke of {text} [{plat.arch_name}]: still running after "
            f"{alive_after:.0f}s ({state.cfg.smoke_timeout:g}s x emulation {factor:.1f}), "
            "counted as a service that started and stays up; give --multiarch-smoke-cmd for a "
            "command that exits"
        )
        return resolve_variant(state, text, plat).digest
    return digest
