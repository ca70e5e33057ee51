"""Container plumbing shared by the checks: labels, pulls, ports, files, logs, clean-up, deadlines.

Everything here talks to a ``docker.DockerClient`` (Docker SDK); nothing imports pytest.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_multiarch.checks.errors import NotReady
from pytest_multiarch.errors import ExecFormatError, OutOfMemory
from pytest_multiarch.platforms import Platform

LABEL = "io.pytest-multiarch"
SESSION_LABEL = "io.pytest-multiarch.session"
ROLE_LABEL = "io.pytest-multiarch.role"
PLATFORM_LABEL = "io.pytest-multiarch.platform"

#: How much slower than native a container under qemu-user is assumed to be when the caller has
#: not measured it (TESTBED: 4-19x for CPU-bound work; MariaDB start-up sits near the low end).
DEFAULT_EMULATION_FACTOR = 6.0
LOG_TAIL = 300


def labels(session_id: str, role: str, platform: Platform) -> dict[str, str]:
    """The labels every container and network of a check carries."""
    return {LABEL: "1", SESSION_LABEL: session_id, ROLE_LABEL: role, PLATFORM_LABEL: str(platform)}


def as_platform(value: Platform | str) -> Platform:
    return value if isinstance(value, Platform) else Platform.parse(value)


def engine_platform(client: Any) -> Platform:
    """The platform the engine runs natively (``docker info``'s Architecture)."""
    info = client.info()
    return Platform.parse(f"{info.get('OSType', 'linux')}/{info['Architecture']}")


def time_factor(client: Any, platform: Platform, emulation_factor: float | None) -> float:
    """1 for the engine's own arch; ``emulation_factor`` (or the default) for an emulated one."""
    native = engine_platform(client)
    if platform.architecture == native.architecture and platform.variant == native.variant:
        return 1.0
    return DEFAULT_EMULATION_FACTOR if emulation_factor is None else max(1.0, emulation_factor)


def emulation_options(client: Any, platform: Platform,
                      cpu_models: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``containers.create`` needs for an emulated *platform*: an init as PID 1 (a qemu
    that takes SIGILL as PID 1 hangs the container) and ``QEMU_CPU``, the qemu CPU model of its
    level or of ``--arch-cpu`` (*cpu_models*).  Nothing for the engine's own arch."""
    from pytest_multiarch.host import cpu

    if platform.architecture == engine_platform(client).architecture:
        return {}
    return {"init": True, "environment": cpu.choose(platform, cpu_models).env}


def ensure_image(client: Any, ref: str, platform: Platform) -> None:
    """Pull ``ref`` unless the engine has it; a pinned ``repo@sha256:`` ref names one variant."""
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        client.images.pull(ref, platform=platform.engine_platform)


def put_files(container: Any, files: Mapping[str, bytes], mode: int = 0o644) -> None:
    """Copy files (absolute path -> content) into a created container before it starts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
    container.put_archive("/", buf.getvalue())


def published_port(container: Any, port: str) -> int:
    """The 127.0.0.1 host port the engine bound for ``port`` (e.g. ``"3306/tcp"``)."""
    container.reload()
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(port) or []
    for binding in bindings:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise NotReady(f"container {container.name} publishes no host port for {port}")


def logs_of(container: Any, tail: int = LOG_TAIL) -> str:
    try:
        raw: bytes = container.logs(tail=tail)
        return raw.decode("utf-8", "replace")
    except Exception as exc:  # the container may be gone already; the log is a nice-to-have
        return f"<no logs: {exc}>"


def exit_problem(container: Any, image: str, platform: Platform, logs: str) -> Exception | None:
    """If the container has stopped, the error that says why (OOM, exec format, exit code)."""
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Running") or state.get("Restarting"):
        return None
    if state.get("OOMKilled"):
        limit = container.attrs.get("HostConfig", {}).get("Memory", 0) >> 20
        return OutOfMemory(
            f"{container.name} ({image}, {platform}) was killed for exceeding its {limit} MiB "
            "memory limit; under qemu-user MariaDB needs innodb_buffer_pool_size_max capped"
        )
    if "exec format error" in logs:
        return ExecFormatError(
            f"{container.name} ({image}) cannot run on {platform}: exec format error - the image "
            "holds binaries of another architecture, or no qemu-user handler is registered"
        )
    return NotReady(
        f"{container.name} ({image}, {platform}) exited with code {state.get('ExitCode')} "
        f"while starting; last log lines:\n{_tail(logs, 15)}"
    )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def remove_quietly(objects: Iterable[Any]) -> None:
    """Remove containers (forced, with anonymous volumes) and networks; ignore what is gone."""
    for obj in objects:
        try:
            if hasattr(obj, "kill"):
                obj.remove(force=True, v=True)
            else:
                obj.remove()
        except Exception:  # already removed, or the engine went away: nothing left to do
            pass


def remove_session(client: Any, session_id: str) -> int:
    """Remove every container and network a session left behind; returns how many."""
    flt = {"label": [f"{SESSION_LABEL}={session_id}"]}
    containers = client.containers.list(all=True, filters=flt)
    networks = client.networks.list(filters=flt)
    remove_quietly(containers)
    remove_quietly(networks)
    return len(containers) + len(networks)


@dataclass(slots=True)
class Deadline:
    """A time budget: ``remaining`` seconds, ``elapsed`` since the start."""

    seconds: float
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def remaining(self) -> float:
        return self.seconds - self.elapsed

    @property
    def expired(self) -> bool:
        return self.remaining <= 0
