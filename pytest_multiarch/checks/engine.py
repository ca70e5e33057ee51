"""How checks reach the engine: through the runners' :class:`EngineRunner`, like every container.

Checks start no container of their own making: every container and network goes through the
runner, so it gets the session labels (owner pid, host, start time: the reaper removes what a
killed run left at the next start), the image pull with its platform check, the memory limit,
an init under emulation and the runner's exit/OOM/exec-format classification.  What this module
adds is the bookkeeping of one check: what it started, their logs, and removing them again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import docker

from pytest_multiarch.errors import CheckError, CommandFailed, MultiarchError, NotReady
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.docker.container import EngineContainer
from pytest_multiarch.runners.docker.engine import EngineRunner
from pytest_multiarch.runners.emulation import DEFAULT_FACTOR

ROLE_LABEL = "io.pytest-multiarch.role"
PLATFORM_LABEL = "io.pytest-multiarch.platform"
#: Log lines attached to a failure, per container.
FAILURE_LOG_LINES = 40

#: What a check is given to reach the engine: a runner, or a Docker SDK client it wraps in one.
Engine: TypeAlias = "EngineRunner | docker.DockerClient"


@contextmanager
def engine_runner(engine: Engine, session_id: str | None = None) -> Iterator[EngineRunner]:
    """*engine* itself, or a runner around a Docker SDK client for *session_id*'s objects.

    A wrapped client stays its owner's: leaving the block neither closes it nor removes other
    objects of the session (the check removes what it started itself).
    """
    if isinstance(engine, EngineRunner):
        yield engine
        return
    runner = EngineRunner(client=engine, session=Session.new(session_id))
    try:
        yield runner
    finally:
        runner.release()


def as_platform(value: Platform | str) -> Platform:
    """A platform from a :class:`Platform` or its name."""
    return value if isinstance(value, Platform) else Platform.parse(value)


def time_factor(runner: EngineRunner, platform: Platform, emulation_factor: float | None) -> float:
    """1 for the engine's own arch; *emulation_factor* (or the runners' default) if emulated."""
    if not runner.is_emulated(platform):
        return 1.0
    return DEFAULT_FACTOR if emulation_factor is None else max(1.0, emulation_factor)


def labels(role: str, platform: Platform) -> dict[str, str]:
    """The labels a check adds to the session's: what the object is for, and its platform."""
    return {ROLE_LABEL: role, PLATFORM_LABEL: str(platform)}


def ensure_running(container: EngineContainer) -> None:
    """Raise what ended *container*'s main process, if it ended.

    The runner classifies OOM kills, exec format errors and qemu crashes; any other exit while a
    check waits for readiness is :class:`NotReady` with the last log lines.
    """
    if container.running():
        return
    try:
        container.check_alive()  # raises the classified error, or CommandFailed for an exit
    except CommandFailed:
        pass
    except MultiarchError as exc:
        exc.add_note(f"--- last log lines of {container.name} ---\n{container.logs(tail=15)}")
        raise
    code = (container.raw.attrs.get("State") or {}).get("ExitCode")
    logs = container.logs()
    raise NotReady(
        f"{container.name} ({container.image}, {container.platform}) exited with code {code} "
        f"while starting; last log lines:\n{container.logs(tail=15)}",
        {container.name: logs},
    )


@contextmanager
def started_on(engine: Engine, session_id: str | None = None) -> Iterator[Started]:
    """What one check starts on *engine* (see :func:`engine_runner`): a failure leaving the block
    carries the containers' last log lines, and everything is removed on the way out."""
    with engine_runner(engine, session_id) as runner, Started(runner) as started:
        yield started


class Started:
    """The containers and networks one check started: their logs, and removing them again.

    Leaving it (as a context manager) adds the last log lines to a :class:`MultiarchError` that
    passes, fills the dicts given to :meth:`keep_logs_in`, then removes everything.
    """

    def __init__(self, runner: EngineRunner) -> None:
        self.runner = runner
        self.containers: list[EngineContainer] = []
        self.networks: list[str] = []
        self._log_sinks: list[dict[str, str]] = []

    def network(self, kind: str, platform: Platform) -> str:
        """A new labelled bridge network for this check; returns its name."""
        name = f"pma-{self.runner.session.id}-{kind}-{secrets.token_hex(3)}"
        self.networks.append(self.runner.create_network(name, labels("network", platform)))
        return name

    def container_name(self, role: str) -> str:
        """A unique, readable name for the check's *role* container."""
        return f"pma-{self.runner.session.id}-{role}-{secrets.token_hex(3)}"

    def add(self, container: EngineContainer) -> EngineContainer:
        """Track *container* for logs and removal."""
        self.containers.append(container)
        return container

    def logs(self, tail: int | None = None) -> dict[str, str]:
        """Every container's log (name → text)."""
        return {c.name: c.logs(tail=tail) for c in self.containers}

    def keep_logs_in(self, sink: dict[str, str]) -> None:
        """Put every container's log into *sink* when the check ends (the containers go then)."""
        self._log_sinks.append(sink)

    def attach_logs(self, exc: MultiarchError) -> None:
        """Add the last log lines of every container to *exc* (its ``logs`` and its notes)."""
        logs = self.logs(tail=FAILURE_LOG_LINES)
        if isinstance(exc, CheckError):
            for name, text in logs.items():
                exc.logs.setdefault(name, text)
        for name, text in logs.items():
            exc.add_note(f"--- last log lines of {name} ---\n{text.rstrip()}")

    def remove(self) -> None:
        """Remove the containers (newest first, logs kept) and the networks; never raises."""
        for container in reversed(self.containers):
            try:
                container.stop(timeout=0)  # SIGKILL: a check's servers hold nothing to keep
            except Exception:  # the engine went away: what is left is reaped by label
                self.runner.remove_quietly(container.raw)
        for name in self.networks:
            self.runner.remove_network(name)

    def __enter__(self) -> Started:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, MultiarchError):
                self.attach_logs(exc)
            for sink in self._log_sinks:
                sink.update(self.logs())
        finally:
            self.remove()
