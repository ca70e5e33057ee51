"""A created container run to completion: attached before the start, its output collected until
it exits or its deadline passes (a watchdog kills it then), its end classified.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker.errors

from pytest_multiarch.errors import RunTimeout
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import RunResult, short_cmd
from pytest_multiarch.runners.classify import raise_classified
from pytest_multiarch.runners.docker.container import text_of
from pytest_multiarch.runners.docker.create import start_failure
from pytest_multiarch.runners.docker.stream import AttachedOutput, attach

if TYPE_CHECKING:
    from pytest_multiarch.runners.docker.engine import EngineRunner

__all__ = ["Job", "run_created"]


@dataclass(frozen=True, slots=True)
class Job:
    """One run's fixed facts."""

    image: str
    platform: Platform
    argv: tuple[str, ...]
    limit: str
    budget: float
    started: float
    cpu_model: str | None = None


def run_created(runner: EngineRunner, container: Any, job: Job) -> RunResult:
    """Attach, start, collect the output until exit or deadline, classify."""
    # Attached before start, like `docker run`: no output is lost, and stdout and stderr
    # stay apart while the logs keep their interleaving.  podman creates the runtime's
    # container on attach, so its start failures show here already.
    stream: AttachedOutput | None = None
    try:
        stream = attach(runner.client.api, container.id,
                        job.started + job.budget + runner.kill_grace)
        container.start()
    except docker.errors.APIError as exc:
        if stream is not None:
            stream.close()
        return start_failure(runner, exc, job.image, job.platform, job.argv, job.started,
                             job.limit)
    timed_out = threading.Event()
    watchdog = threading.Timer(job.budget, _kill, (container, timed_out))
    watchdog.daemon = True
    watchdog.start()
    try:
        out, err, logs = _collect(stream)
        status = container.wait(timeout=runner.kill_grace)
    finally:
        watchdog.cancel()
        stream.close()
    exit_code = int(status.get("StatusCode", -1))
    oom = False
    if exit_code != 0:
        container.reload()
        oom = bool(container.attrs["State"].get("OOMKilled")) or runner.kernel_oom(
            container.id, exit_code)
    result = runner.result(
        job.image, job.platform, job.argv, exit_code, text_of(out), text_of(err),
        time.monotonic() - job.started, text_of(logs), oom_killed=oom, mem_limit=job.limit,
        cpu_model=job.cpu_model,
    )
    if timed_out.is_set():
        raise _timeout_error(result, job.budget)
    return raise_classified(result)


def _kill(container: Any, flag: threading.Event) -> None:
    flag.set()
    with contextlib.suppress(docker.errors.APIError):
        container.kill()


def _collect(stream: AttachedOutput) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """stdout, stderr and both interleaved, until the stream ends."""
    out: list[bytes] = []
    err: list[bytes] = []
    logs: list[bytes] = []
    for kind, data in stream:
        (err if kind == 2 else out).append(data)
        logs.append(data)
    return out, err, logs


def _timeout_error(result: RunResult, budget: float) -> RunTimeout:
    error = RunTimeout(
        f"{short_cmd(result.cmd)!r} in {result.image} on {result.platform} ({result.where}) did "
        f"not finish within {budget:.0f}s and was killed. Under emulation this may just be "
        "slow: pass timeout=, raise --multiarch-run-timeout (native seconds, scaled by the "
        "emulation factor) or look for a hang in the logs."
    )
    error.logs = result.logs
    return error
