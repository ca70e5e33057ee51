"""Runners: execute a variant's commands on an engine (local or remote) or without one.

* :class:`~pytest_multiarch.runners.engine.EngineRunner` — Docker API, ``unix://``, ``tcp://``,
  ``ssh://``; services with ports.
* :class:`~pytest_multiarch.runners.rootfs.RootfsRunner` — no engine: proot/chroot on the unpacked
  layers; one-shot commands only.

:func:`make_default_runner` picks one for a platform from the session's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pytest_multiarch.errors import EngineUnavailable
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Runner, Session

__all__ = ["PODMAN_SOCKETS", "make_default_runner"]

#: Where ``--engine=podman`` looks for ``podman system service`` (root, then rootless).
PODMAN_SOCKETS = ("/run/podman/podman.sock", "{runtime}/podman/podman.sock")


class _Settings(Protocol):
    arch_hosts: dict[Platform, str]
    engine: Any  # Sourced[str]
    mem_limit: str
    cache_dir: Path | None


class _State(Protocol):
    cfg: Any
    session_id: str

    def registry(self) -> Any: ...


def _podman_url() -> str:
    import os

    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    for candidate in PODMAN_SOCKETS:
        path = Path(candidate.format(runtime=runtime))
        if path.exists():
            return f"unix://{path}"
    raise EngineUnavailable(
        "--engine=podman but no podman API socket at /run/podman/podman.sock or "
        f"{runtime}/podman/podman.sock. Start one: podman system service --time=0 "
        "unix:///run/podman/podman.sock &"
    )


def make_default_runner(state: _State, platform: Platform) -> Runner:
    """The runner for *platform*: its ``--arch-host`` engine, else per ``--engine``.

    ``auto`` uses the local Docker engine and falls back to the rootfs runner when none answers.
    """
    cfg = state.cfg
    session = Session.new(state.session_id)
    url = cfg.arch_hosts.get(platform)
    if url is not None:
        from pytest_multiarch.runners.engine import EngineRunner, reap_stale

        runner = EngineRunner(url, named_arch=platform, session=session, mem_limit=cfg.mem_limit)
        reap_stale(runner)  # leftovers of a crashed earlier session on that engine
        return runner
    engine = str(cfg.engine.value)
    if engine != "rootfs":
        from pytest_multiarch.runners.engine import EngineRunner, reap_stale

        try:
            runner = EngineRunner(
                _podman_url() if engine == "podman" else None,
                platform=platform, session=session, mem_limit=cfg.mem_limit,
                connect_timeout=10.0 if engine != "auto" else 3.0,
            )
        except EngineUnavailable:
            if engine != "auto":
                raise
        else:
            reap_stale(runner)
            return runner
    from pytest_multiarch.runners.rootfs import RootfsRunner

    cache = cfg.cache_dir / "rootfs" if cfg.cache_dir is not None else None
    return RootfsRunner(registry=state.registry(), cache_dir=cache, platform=platform,
                        session=session, mem_limit=cfg.mem_limit)
