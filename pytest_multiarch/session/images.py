"""Session-level operations on one image and one arch: resolve, audit, run, start, gate checks.

This is where the plain library pieces meet the session state (its registry client, runners and
caches).  No pytest here: fixtures and gate items call these functions.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import MultiarchError
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
    from pytest_multiarch.oci.registry import Manifest
    from pytest_multiarch.runners.base import Container, Runner, RunResult
    from pytest_multiarch.session.state import State


class AuditFailed(MultiarchError):
    """The static audit found binaries that would not run on the variant's platform."""


def opened(state: State, text: str) -> OpenedSource:
    """The image source for *text* (registry reference or ``oci:DIR[:TAG]``), cached."""
    if text not in state.sources:
        state.sources[text] = open_source(text, client=state.registry())
    source: OpenedSource = state.sources[text]
    return source


def resolve_variant(state: State, text: str, plat: Platform) -> ResolvedImage:
    """*text*'s variant for *plat*; raises PlatformNotInIndex naming what the index has."""
    key = (text, plat.arch_name)
    resolved = state.resolved.get(key)
    if resolved is None:
        source, ref = opened(state, text)
        resolved = resolve(source, ref, plat, manifest=top_manifest(state, text))
        state.resolved[key] = resolved
    return resolved


def top_manifest(state: State, text: str) -> Manifest:
    """The manifest *text* names (usually an index), fetched once per session."""
    if text not in state.manifests:
        source, ref = opened(state, text)
        manifest = source.get_manifest(ref)
        state.manifests[text] = manifest
        try:
            plats = list_platforms(source, ref, manifest=manifest)
            state.index_platforms[text] = [str(p) for p in plats]
        except MultiarchError:
            state.index_platforms[text] = []
    top: Manifest = state.manifests[text]
    return top


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
    state: State, text: str, plat: Platform, cmd: Any = None, *, check: bool = False,
    **options: Any,
) -> tuple[RunResult, str]:
    """Run *cmd* in *text*'s *plat* variant, by digest. Returns the result and the digest.

    An exec format error carries what the static audit says the binary really is.
    """
    from pytest_multiarch.errors import ExecFormatError
    from pytest_multiarch.runners.base import check_runs

    resolved = resolve_variant(state, text, plat)
    options.setdefault("mem_limit", state.cfg.mem_limit)
    try:
        result = runner_for(state, text, plat).run(resolved.pinned, plat, cmd, **options)
    except ExecFormatError as exc:
        hint = _audit_hint(state, text, plat)
        if not hint:
            raise
        enriched = ExecFormatError(f"{exc} The static audit says: {hint}")
        enriched.logs = exc.logs
        raise enriched from None
    _note_host_cpu(state, resolved.pinned, plat)
    if check:
        check_runs(result)
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
    state.matrix.line(plat.arch_name).cpu_model = f"{found.name} ({found.platform.arch_name})"
    if found.newer_than(plat):
        state.summary_lines.append(
            f"multiarch: {plat.arch_name} ran natively on {found.name}, which implements "
            f"{found.platform}: newer than {plat} promises, so a pass there does not cover the "
            f"older machines; emulate them too (--arch={plat.arch_name} without --arch-host, "
            "or --arch-cpu) to catch code built for a newer CPU"
        )


def start_variant(
    state: State, text: str, plat: Platform, **options: Any
) -> tuple[Container, str]:
    """Start *text*'s *plat* variant, by digest. Returns the container and the digest."""
    resolved = resolve_variant(state, text, plat)
    options.setdefault("mem_limit", state.cfg.mem_limit)
    return runner_for(state, text, plat).start(resolved.pinned, plat, **options), resolved.digest


def _audit_hint(state: State, text: str, plat: Platform) -> str:
    """What the audit says about the variant's entrypoint, for an exec format error."""
    try:
        audit = audit_variant(state, text, plat)
    except Exception:  # the hint is a nicety; the classified error stands without it
        return ""
    return " ".join(f.message for f in audit.failures[:1])


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
    return state.emulation[plat]


def engine_client(state: State, plat: Platform, what: str) -> Any:
    """The Docker API client of *plat*'s runner; services with ports need an engine."""
    client = getattr(state.runner(plat), "client", None)
    if client is None:
        raise MultiarchError(
            f"{what} needs a container engine for {plat}, but the runner is "
            f"{state.runner(plat).describe(plat)} without one (engine-less rootfs runner). "
            "Start dockerd or podman, or use --engine=docker"
        )
    return client


def rest_service_for(
    state: State, service: str, database: str, plat: Platform, what: str
) -> AbstractContextManager[RestService]:
    """*service*'s *plat* variant with *database*'s beside it, both by digest, ready when
    entered; readiness waits scale with the emulation factor. *what* names the caller."""
    from pytest_multiarch.checks.rest import rest_service

    return rest_service(
        engine_client(state, plat, what), platform=plat,
        service_image=resolve_variant(state, service, plat).pinned,
        db_image=resolve_variant(state, database, plat).pinned,
        session_id=state.session_id, emulation_factor=emulation_factor(state, database, plat),
        cpu_models=state.cfg.arch_cpus.value,
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
    """The variant's default command (or ``--multiarch-smoke-cmd``) runs and exits 0."""
    cmd = list(state.cfg.smoke_cmd) if state.cfg.smoke_cmd else None
    # A server entrypoint never exits: bound the run (scaled for emulation) so the gate ends.
    factor = emulation_factor(state, text, plat)
    _, digest = run_variant(state, text, plat, cmd, check=True,
                            timeout=SMOKE_TIMEOUT * max(1.0, factor))
    return digest


#: Native seconds the smoke check's command may take before it fails as RunTimeout.
SMOKE_TIMEOUT = 30.0
