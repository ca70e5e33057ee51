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
import weakref
from pathlib import Path
from typing import Any, Protocol

from pytest_multiarch.errors import EngineUnavailable, MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Runner, Session
from pytest_multiarch.runners.detect import EngineChoice, PodmanService, detect

__all__ = ["engine_choice", "engine_header", "make_default_runner", "rootfs_runner"]


class _Settings(Protocol):
    arch_hosts: dict[Platform, str]
    engine: Any  # Sourced[str]
    mem_limit: str
    cache_dir: Path | None


class _State(Protocol):
    cfg: Any
    session_id: str

    def registry(self) -> Any: ...


# One engine choice and at most one private podman service per session state.
_LOCK = threading.Lock()
_CHOICES: weakref.WeakKeyDictionary[Any, EngineChoice] = weakref.WeakKeyDictionary()
_SERVICES: weakref.WeakKeyDictionary[Any, PodmanService] = weakref.WeakKeyDictionary()


def engine_choice(state: _State) -> EngineChoice:
    """The engine ``--engine`` means for this session, detected once (EngineUnavailable)."""
    with _LOCK:
        choice = _CHOICES.get(state)
        if choice is None:
            choice = detect(str(state.cfg.engine.value))
            _CHOICES[state] = choice
        return choice


def engine_header(state: _State) -> str:
    """``engine=podman unix:///run/podman/podman.sock (from option; …)`` for the report header."""
    source = state.cfg.engine.source
    try:
        return "engine=" + engine_choice(state).describe(source)
    except MultiarchError as exc:
        return f"engine={state.cfg.engine.value} (from {source}; UNAVAILABLE: {exc})"


def make_default_runner(state: _State, platform: Platform) -> Runner:
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
                              **_cpus(cfg))
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


def rootfs_runner(state: _State, platform: Platform, session: Session | None = None) -> Runner:
    """The engine-less runner for *platform*, unpacking into the session's rootfs cache."""
    from pytest_multiarch.runners.rootfs.runner import RootfsRunner

    cfg = state.cfg
    cache = cfg.cache_dir / "rootfs" if cfg.cache_dir is not None else None
    return RootfsRunner(registry=state.registry(), cache_dir=cache, platform=platform,
                        session=session or Session.new(state.session_id),
                        mem_limit=cfg.mem_limit, **_cpus(cfg))


def _cpus(cfg: Any) -> dict[str, Any]:
    """The runners' CPU-model arguments from ``--arch-cpu`` (absent in older settings)."""
    chosen = getattr(cfg, "arch_cpus", None)
    if chosen is None:
        return {}
    return {"cpu_models": chosen.value, "cpu_source": chosen.source}


def _engine_runner(state: _State, choice: EngineChoice, platform: Platform, session: Session,
                   *, connect_timeout: float) -> Runner:
    from pytest_multiarch.runners.docker.engine import EngineRunner, reap_stale

    service = None
    url = None if choice.from_env else choice.url
    if choice.start_service:
        with _LOCK:
            service = _SERVICES.get(state)
            if service is None:
                service = _SERVICES[state] = PodmanService()
        url = service.acquire()
    try:
        runner = EngineRunner(url, platform=platform, session=session,
                              mem_limit=state.cfg.mem_limit, connect_timeout=connect_timeout,
                              **_cpus(state.cfg))
    except BaseException:
        if service is not None:
            service.release()
        raise
    if service is not None:
        # The service outlives the runner's own cleanup: containers are removed through it.
        runner.add_close_callback(service.release)
    reap_stale(runner)
    return runner
