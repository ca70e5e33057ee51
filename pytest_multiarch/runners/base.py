"""What every runner offers, the result of a run, and the helpers the runners share.

A runner executes a command in one variant of an image, always named by digest
(``repo@sha256:…``), for one platform.  Two runners ship: :mod:`.docker.engine` (a Docker API
engine, local or remote) and :mod:`.rootfs.runner` (no engine: proot or chroot on an unpacked
root filesystem).  Plug your own through the ``pytest_multiarch_make_runner`` hook; it only has
to satisfy :class:`Runner`.

``run()`` returns a :class:`RunResult` whenever the command itself ran, whatever its exit code:
an application failure is data.  Failures that are not the application's — exec format error, no
emulator, qemu-user crash, out of memory — are raised as their :mod:`~pytest_multiarch.errors`
class (:mod:`.classify` tells which).  :func:`~.classify.check_runs` additionally turns a
missing command and a non-zero exit into errors.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pytest_multiarch.errors import UsageError
from pytest_multiarch.host.binfmt import BinfmtStatus
from pytest_multiarch.platforms import Platform

#: Labels on every container, network and volume a runner creates.
LABEL = "io.pytest-multiarch"
LABEL_SESSION = "io.pytest-multiarch.session"
LABEL_PID = "io.pytest-multiarch.pid"
LABEL_HOST = "io.pytest-multiarch.host"
LABEL_CREATED = "io.pytest-multiarch.created"

DEFAULT_MEM_LIMIT = "512m"
#: Native seconds a run may take by default; runners scale it by the emulation factor.
DEFAULT_RUN_TIMEOUT = 300.0

Command = str | Sequence[str]


@dataclass(frozen=True, slots=True)
class Session:
    """Who owns the objects a runner creates; stale ones are reaped by pid and host."""

    id: str
    pid: int
    host: str
    started: float

    @classmethod
    def new(cls, session_id: str | None = None) -> Session:
        """A session for this process; *session_id* defaults to a random one."""
        return cls(session_id or uuid.uuid4().hex[:12], os.getpid(), socket.gethostname(),
                   time.time())

    def labels(self) -> dict[str, str]:
        """The labels to put on every object: marker, session id, owner pid and host."""
        return {
            LABEL: "1",
            LABEL_SESSION: self.id,
            LABEL_PID: str(self.pid),
            LABEL_HOST: self.host,
            LABEL_CREATED: f"{self.started:.0f}",
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """One finished command: exit code, output, wall time and where it ran."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float
    logs: str = ""
    image: str = ""
    platform: Platform | None = None
    cmd: tuple[str, ...] = ()
    where: str = ""
    emulated: bool = False
    oom_killed: bool = False
    mem_limit: str = ""
    #: binfmt preflight taken when the run failed with exec format error under emulation.
    emulator: BinfmtStatus | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    #: The qemu CPU model an emulated run used ("" = qemu's own default, or native).
    cpu_model: str = ""

    @property
    def ok(self) -> bool:
        """Exit code 0 and not killed for memory."""
        return self.exit_code == 0 and not self.oom_killed

    @property
    def output(self) -> str:
        """stdout followed by stderr."""
        return self.stdout + self.stderr


@runtime_checkable
class Container(Protocol):
    """A started container (or process tree) of one variant; stop() removes it."""

    @property
    def name(self) -> str:
        """A name for reports."""

    @property
    def host(self) -> str:
        """The address at which :meth:`host_port` ports are reachable."""

    def exec(
        self, cmd: Command, *, env: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> RunResult:
        """Run *cmd* inside the container; classified like :meth:`Runner.run`."""

    def logs(self) -> str:
        """The main process's output so far (kept after stop())."""

    def host_port(self, port: int, protocol: str = "tcp") -> int:
        """The host port published for the container's *port*."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and remove; idempotent."""


@runtime_checkable
class Runner(Protocol):
    """Runs variants of images by digest for one or more platforms."""

    def run(
        self,
        image: str,
        platform: Platform,
        cmd: Command | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        mem_limit: str | None = None,
    ) -> RunResult:
        """Run *cmd* (default: the image's own) to completion in a fresh container."""

    def start(
        self,
        image: str,
        platform: Platform,
        cmd: Command | None = None,
        *,
        env: Mapping[str, str] | None = None,
        ports: Sequence[int | str] = (),
        mem_limit: str | None = None,
        name: str | None = None,
        network: str | None = None,
        entrypoint: Command | None = None,
        tmpfs: Mapping[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, str]] | None = None,
        network_aliases: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Container:
        """Start a long-running container; the caller stops it (or close() does).

        *network* (with *network_aliases*), *entrypoint*, *tmpfs*, *volumes* (name →
        ``{"bind": path, "mode": "rw"}``), *files* (absolute path → content, copied in before the
        start) and *labels* (joining the session's) are for runners with containers; one that
        cannot honour them raises :class:`~pytest_multiarch.errors.RunnerError` naming them.
        """

    def describe(self, platform: Platform | None = None) -> str:
        """``emulated`` or ``native on HOST``, for the report."""

    def close(self) -> None:
        """Remove everything this runner's session created; idempotent."""


# -- helpers shared by the runners -------------------------------------------------------------


def as_argv(cmd: Command) -> tuple[str, ...]:
    """A command as an argv tuple; a string is split like a shell would (no expansion)."""
    return tuple(shlex.split(cmd)) if isinstance(cmd, str) else tuple(cmd)


def require_digest(image: str) -> None:
    """Refuse a tag: local stores key images by tag, not platform, and run the wrong variant."""
    if "@sha256:" not in image:
        raise UsageError(
            f"runners take images by digest, got {image!r}; a tag may silently run another "
            "architecture's variant already in the engine's store. Resolve it first "
            "(pytest_multiarch.oci.resolve) and pass the variant's 'repo@sha256:…'"
        )


def parse_mem_limit(value: str | int) -> int:
    """``512m``/``512mb``/``1g``/``1.5g``/bytes → bytes; UsageError for anything else.

    The one size parser of the package (option and runners): the Docker SDK's own, so a value
    the plugin accepts is one the engine accepts.
    """
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    try:
        size = value if isinstance(value, int) else int(parse_bytes(value.strip().lower()))
    except (DockerException, ValueError):
        size = 0
    if size <= 0:
        raise UsageError(f"invalid memory limit {value!r}; use e.g. 512m, 1g or a byte count")
    return size


def short_cmd(cmd: Sequence[str]) -> str:
    """A command as one readable shell-quoted string, cut to 80 characters."""
    text = shlex.join(cmd) if cmd else "(image default command)"
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(slots=True)
class Deadline:
    """A time budget: ``remaining`` seconds, ``elapsed`` since the start."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    @property
    def remaining(self) -> float:
        """Seconds left (negative once expired)."""
        return self.seconds - self.elapsed

    @property
    def expired(self) -> bool:
        """Whether the budget is used up."""
        return self.remaining <= 0
