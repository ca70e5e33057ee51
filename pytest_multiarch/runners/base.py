"""What every runner offers, the result of a run, and how a failed run is classified.

A runner executes a command in one variant of an image, always named by digest
(``repo@sha256:…``), for one platform.  Two runners ship: :mod:`.engine` (a Docker API engine,
local or remote) and :mod:`.rootfs` (no engine: proot or chroot on an unpacked root filesystem).
Plug your own through the ``pytest_multiarch_make_runner`` hook; it only has to satisfy
:class:`Runner`.

``run()`` returns a :class:`RunResult` whenever the command itself ran, whatever its exit code:
an application failure is data.  Failures that are not the application's — exec format error, no
emulator, qemu-user crash, out of memory — are raised as their :mod:`~pytest_multiarch.errors`
class.  :func:`check_runs` additionally turns a missing command and a non-zero exit into errors.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pytest_multiarch.errors import (
    CommandFailed,
    CommandNotFound,
    EmulatorCrash,
    EmulatorMissing,
    ExecFormatError,
    OutOfMemory,
    RunnerError,
    UsageError,
)
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
    ) -> Container:
        """Start a long-running container; the caller stops it (or close() does)."""

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


# -- classification -----------------------------------------------------------------------------

_EXEC_FORMAT = re.compile(r"exec format error|invalid elf image for this architecture", re.I)
_EXEC_BINARY = (
    re.compile(r"exec (\S+) failed: exec format error", re.I),  # tini / docker-init
    re.compile(r"exec (\S+): exec format error", re.I),  # runc >= 1.1
    re.compile(r"[‘'\"]([^’'\"]+)[’'\"]: exec format error", re.I),  # coreutils chroot / env
    re.compile(r"execve\(\"([^\"]+)\"\)", re.I),  # proot
    re.compile(r"qemu-\S+: (\S+): invalid elf image", re.I),  # qemu-user itself
    re.compile(r"(\S+): (?:cannot execute binary file: )?exec format error", re.I),  # shells
)
_QEMU_CRASH = (
    re.compile(r"qemu: uncaught target signal (\d+) \(([^)]*)\)"),
    re.compile(r"qemu: unhandled CPU exception[^\n]*"),
    re.compile(r"qemu(?:-\S+)?: fatal:[^\n]*"),
    re.compile(r"qemu-\S+: [^\n]*Assertion[^\n]*failed[^\n]*"),
)
# execvp() and shells retry an ENOEXEC file as a shell script: a binary then fails at "line 1".
_SHELL_FALLBACK = re.compile(r"^(\S+): line 1: syntax error: unexpected", re.M)
_NOT_FOUND = re.compile(
    r"executable file not found|no such file or directory|: not found|command not found", re.I
)


def _subject(result: RunResult) -> str:
    plat = result.platform or "?"
    where = f" ({result.where})" if result.where else ""
    return f"{short_cmd(result.cmd)!r} in {result.image or '?'} on {plat}{where}"


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def exec_format_binary(result: RunResult) -> str:
    """The binary the kernel refused, from the runtime's message; else the command's argv[0]."""
    for pattern in _EXEC_BINARY:
        match = pattern.search(result.stderr)
        if match and match.group(1) != "pid1":  # podman's catatonit names no binary
            return match.group(1)
    return result.cmd[0] if result.cmd else "?"


def classify(result: RunResult, *, hint: str = "") -> RunnerError | None:
    """The error a run stands for, or None for success and for plain application failures.

    *hint* is appended to an exec-format message (e.g. the audit's "/bin/app is x86-64").
    """
    if result.oom_killed:
        error: RunnerError = OutOfMemory(
            f"{_subject(result)} was killed by the kernel's OOM killer at its memory limit "
            f"({result.mem_limit or 'engine default'}). Under qemu-user a process that reserves a "
            "large address space commits it (MariaDB's default innodb_buffer_pool_size_max "
            "reserves terabytes): cap the program's memory settings, or raise the limit with "
            "mem_limit= if the workload needs it."
        )
    elif result.exit_code == 0:
        return None
    elif _EXEC_FORMAT.search(result.stderr):
        binary = exec_format_binary(result)
        status = result.emulator
        if result.emulated and status is not None and not status.ok:
            error = EmulatorMissing(
                f"{_subject(result)} failed with 'exec format error' for {binary} "
                f"({_last_lines(result.stderr, 1)!r}): the kernel cannot run {result.platform} "
                f"binaries because {status.reason}. Fix: {status.fix}"
            )
        else:
            plat = result.platform
            arch = plat.info.elf_description if plat is not None else "this platform"
            error = ExecFormatError(
                f"{_subject(result)} failed with 'exec format error': {binary} is not built "
                f"for {arch}, although the variant claims {plat} and such binaries run "
                f"here. The image was built with a binary of another architecture (a "
                f"cross-build that copied a host binary, or a wrong base image). "
                + (f"{hint} " if hint else "")
                + f"Check it with `file {binary}` or the audit, and rebuild that variant."
            )
    else:
        crash = next((m for p in _QEMU_CRASH if (m := p.search(result.stderr))), None)
        if crash is None:
            return None
        version = result.extra.get("qemu_version", "")
        error = EmulatorCrash(
            f"{_subject(result)} died under qemu-user{f' {version}' if version else ''}: "
            f"{crash.group(0).strip()!r} (exit {result.exit_code}). The emulated process got a "
            "fatal signal: either qemu-user does not support something it did (an instruction, "
            "a syscall, a huge address-space reservation) or the program really crashes. Run it "
            "on a native host (--arch-host) or a newer qemu to tell which."
        )
    error.logs = result.logs
    return error


def check_runs(result: RunResult, *, ok_codes: Sequence[int] = (0,), hint: str = "") -> RunResult:
    """Return *result* if its exit code is in *ok_codes*; else raise what the failure is.

    Raises the :func:`classify` error, :class:`CommandNotFound` for exit 127 with a "not found"
    message, or :class:`CommandFailed` for any other exit code.
    """
    error = classify(result, hint=hint)
    if error is None and result.exit_code in ok_codes:
        return result
    if error is None and result.exit_code == 127 and _NOT_FOUND.search(result.stderr):
        error = CommandNotFound(
            f"{_subject(result)}: command not found ({_last_lines(result.stderr, 1)}). The "
            f"variant for {result.platform} does not contain {result.cmd[:1] or 'it'} on its "
            "PATH: check the image's PATH and that the package is installed for this "
            "architecture."
        )
    if error is None:
        script = _SHELL_FALLBACK.search(result.stderr)
        hint = (
            f" {script.group(1)} is probably a binary the kernel refused (exec format error) "
            "that a shell then read as a script: check its architecture with the audit."
            if script else " The command ran, so this is the application failing on this "
            "architecture; see the container logs."
        )
        error = CommandFailed(
            f"{_subject(result)} exited {result.exit_code} after {result.duration:.1f}s: "
            f"{_last_lines(result.stderr or result.stdout) or 'no output'}.{hint}"
        )
    error.logs = error.logs or result.logs
    raise error



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
