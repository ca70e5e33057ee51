"""Runners: execute a variant's commands on an engine (local or remote) or without one.

* :class:`~pytest_multiarch.runners.docker.engine.EngineRunner` — Docker API (Docker or podman),
  ``unix://``, ``tcp://``, ``ssh://``; services with ports.
* :class:`~pytest_multiarch.runners.rootfs.runner.RootfsRunner` — no engine: proot/chroot on the
  unpacked layers; one-shot commands only.

:func:`make_default_runner` picks one for a platform from the session's settings; which engine
``--engine`` means here is :func:`pytest_multiarch.runners.detect.detect`'s answer, taken once per
session.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_multiarch.errors import EngineUnavailable, MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Runner, Session
from pytest_multiarch.runners.detect import EngineChoice, detect
from pytest_multiarch.runners.podman_service import PodmanService

if TYPE_CHECKING:
    from pytest_multiarch.oci.registry import RegistryClient

__all__ = ["EngineSelection", "engine_choice", "engine_header", "make_default_runner",
           "rootfs_runner"]


class EngineSelection:
    """The engine ``--engine`` means for one session, detected once, and the private podman
    service of that session (started on first use, shared by its runners)."""

    def __init__(self, engine: str, insecure_registries: Sequence[str] = ()) -> None:
        self.engine = engine
        # Marked insecure, beside loopback, in the private podman service's registries.conf.
        self.insecure_registries = tuple(insecure_registries)
        self._lock = threading.Lock()
        self._choice: EngineChoice | None = None
        self._service: PodmanService | None = None

    def choice(self) -> EngineChoice:
        """:func:`~pytest_multiarch.runners.detect.detect`'s answer (EngineUnavailable)."""
        with self._lock:
            if self._choice is None:
                self._choice = detect(self.engine)
            return self._choice

    def podman_service(self) -> PodmanService:
        """The session's one private ``podman system service`` (not started until acquired)."""
        with self._lock:
            if self._service is None:
                self._service = PodmanService(insecure_registries=self.insecure_registries)
            return self._service


class _EngineSetting(Protocol):
    @property
    def value(self) -> str: ...

    @property
    def source(self) -> str: ...


class _SecondsSetting(Protocol):
    @property
    def value(self) -> float: ...


class _LimitSetting(Protocol):
    @property
    def value(self) -> int: ...


class _CpusSetting(Protocol):
    @property
    def value(self) -> Mapping[str, str]: ...

    @property
    def source(self) -> str: ...


class RunnerSettings(Protocol):
    """What the factory reads of the session's settings."""

    @property
    def unpack_max_bytes(self) -> _LimitSetting | None: ...

    @property
    def unpack_max_files(self) -> _LimitSetting | None: ...

    @property
    def arch_hosts(self) -> Mapping[Platform, str]: ...

    @property
    def engine(self) -> _EngineSetting: ...

    @property
    def mem_limit(self) -> str: ...

    @property
    def run_timeout(self) -> _SecondsSetting:
        """Native seconds a run may take (scaled by the emulation factor)."""

    @property
    def cache_dir(self) -> Path | None: ...

    @property
    def arch_cpus(self) -> _CpusSetting:
        """``--arch-cpu`` overrides: arch (or arch/variant) → qemu CPU model."""


class RunnerContext(Protocol):
    """What the factory needs of a session: settings, id, engine selection, registry client."""

    @property
    def cfg(self) -> RunnerSettings: ...

    @property
    def session_id(self) -> str: ...

    @property
    def engines(self) -> EngineSelection: ...

    def registry(self) -> RegistryClient: ...


def engine_choice(state: RunnerContext) -> EngineChoice:
    """The engine ``--engine`` means for this session, detected once (EngineUnavailable)."""
    return state.engines.choice()


def engine_header(state: RunnerContext) -> str:
    """``engine=podman unix:///run/podman/podman.sock (from option; …)`` for the report header."""
    source = state.cfg.engine.source
    try:
        return "engine=" + engine_choice(state).describe(source)
    except MultiarchError as exc:
        return f"engine={state.cfg.engine.value} (from {source}; UNAVAILABLE: {exc})"


def make_default_runner(state: RunnerContext, platform: Platform) -> Runner:
    """The runner for *platform*: its ``--arch-host`` engine, else per ``--engine``.

    ``auto`` uses the engine :func:`~pytest_multiarch.runners.detect.detect` found and falls back to
    the rootfs runner when none answers (or the one found stops answering).
    """
    cfg = state.cfg
    session = Session.new(state.session_id)
    url = cfg.arch_hosts.get(platform)
    if url is not None:
        from pytest_multiarch.runners.docker.engine import EngineRunner, reap_stale

        runner = EngineRunner(url, named_arch=platform, session=session, mem_limit=cfg.mem_limit,
                              run_timeout=cfg.run_timeout.value, **_cpus(cfg))
        reap_stale(runner)  # leftovers of a crashed earlier session on that engine
        return runner
    engine = str(cfg.engine.value)
    choice = engine_choice(state)  # --engine=podman without any podman raises here
    if choice.kind != "rootfs":
        try:
            return _engine_runner(state, choice, platform, session,
                                  connect_timeout=3.0 if engine == "auto" else 10.0)
        except EngineUnavailable:
            if engine != "auto":
                raise
    return rootfs_runner(state, platform, session)


def rootfs_runner(
    state: RunnerContext, platform: Platform, session: Session | None = None
) -> Runner:
    """The engine-less runner for *platform*, unpacking into the session's rootfs cache."""
    from pytest_multiarch.runners.rootfs.runner import RootfsRunner

    cfg = state.cfg
    cache = cfg.cache_dir / "rootfs" if cfg.cache_dir is not None else None
    from pytest_multiarch.runners.rootfs.unpack import UnpackLimits

    default = UnpackLimits()
    limits = UnpackLimits(
        cfg.unpack_max_bytes.value if cfg.unpack_max_bytes else default.max_bytes,
        cfg.unpack_max_files.value if cfg.unpack_max_files else default.max_files,
    )
    return RootfsRunner(registry=state.registry(), cache_dir=cache, platform=platform,
                        session=session or Session.new(state.session_id),
                        mem_limit=cfg.mem_limit, run_timeout=cfg.run_timeout.value,
                        unpack_limits=limits, **_cpus(cfg))


def _cpus(cfg: RunnerSettings) -> dict[str, Any]:
    """The runners' CPU-model arguments from ``--arch-cpu``."""
    return {"cpu_models": cfg.arch_cpus.value, "cpu_source": cfg.arch_cpus.source}


def _engine_runner(state: RunnerContext, choice: EngineChoice, platform: Platform, session: Session,
                   *, connect_timeout: float) -> Runner:
    from pytest_multiarch.runners.docker.engine import EngineRunner, reap_stale

    service = None
    url = None if choice.from_env else choice.url
    if choice.start_service:
        service = state.engines.podman_service()
        url = service.acquire()
    try:
        runner = EngineRunner(url, platform=platform, session=session,
                              mem_limit=state.cfg.mem_limit, connect_timeout=connect_timeout,
                              run_timeout=state.cfg.run_timeout.value, **_cpus(state.cfg))
    except BaseException:
        if service is not None:
            service.release()
        raise
    if service is not None:
        # The service outlives the runner's own cleanup: containers are removed through it.
        runner.add_close_callback(service.release)
        runner.managed_registries = True
    reap_stale(runner)
    return runner
