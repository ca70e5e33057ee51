"""A started container of the engine runner: its start-up (files copied in, a main process that
dies at once caught), exec, logs, published ports, stop."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import docker.errors
import requests.exceptions

from pytest_multiarch.errors import CommandNotFound, RunnerError, RunTimeout
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Command, RunResult, as_argv, short_cmd
from pytest_multiarch.runners.classify import check_runs, raise_classified
from pytest_multiarch.runners.docker.cleanup import sigint_deferred
from pytest_multiarch.runners.docker.connection import engine_lost
from pytest_multiarch.runners.docker.create import NOT_FOUND_MARKERS, start_failure
from pytest_multiarch.runners.docker.stream import ENGINE_LOST

if TYPE_CHECKING:
    from pytest_multiarch.runners.docker.engine import EngineRunner

__all__ = ["EngineContainer", "launch"]

# How long start() watches for a main process that dies at once.  Behind docker-init (emulated
# platforms) even a missing command only fails after start() returned; natively runc reports
# that synchronously and the grace only catches a crash at start-up.
START_GRACE = 0.15
START_GRACE_EMULATED = 0.5
# podman (conmon, catatonit) takes about three times as long to report a dead main process.
PODMAN_GRACE_FACTOR = 3.0


def launch(
    runner: EngineRunner, container: Any, image: str, platform: Platform,
    argv: tuple[str, ...], mem_limit: str, *, files: Mapping[str, bytes] | None,
) -> EngineContainer:
    """Start the created *container* (its *files* copied in first) and watch it for a moment;
    removes it and raises :class:`CommandNotFound` / the classified error when its main
    process cannot start or dies at once (an emulated one, behind docker-init, gets longer)."""
    started = time.monotonic()
    try:
        if files:
            container.put_archive("/", tar_of(files))
        try:
            container.start()
        except docker.errors.APIError as exc:
            result = start_failure(runner, exc, image, platform, argv, started, mem_limit)
            raise CommandNotFound(
                f"{short_cmd(argv)!r} in {image} on {platform}: command not found "
                f"({result.stderr.strip()})"
            ) from exc
        handle = EngineContainer(runner, container, image, platform, argv, mem_limit)
        # create_kwargs puts every emulated container behind an init.
        grace = START_GRACE_EMULATED if runner.is_emulated(platform) else START_GRACE
        handle.check_alive(grace=grace * (PODMAN_GRACE_FACTOR if runner.is_podman else 1))
        return handle
    except BaseException:
        runner.remove_quietly(container)
        raise


class EngineContainer:
    """A started container: exec, logs, published ports, stop.  Logs survive stop()."""

    def __init__(
        self, runner: EngineRunner, container: Any, image: str, platform: Platform,
        argv: tuple[str, ...], mem_limit: str,
    ) -> None:
        self._runner = runner
        self._container = container
        self.image = image
        self.platform = platform
        self.argv = argv
        self.mem_limit = mem_limit
        self._final_logs: str | None = None
        self._started = time.monotonic()

    @property
    def id(self) -> str:
        """The engine's container id."""
        return str(self._container.id)

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self._container.name)

    @property
    def host(self) -> str:
        """Where published ports are reachable from here."""
        addr = self._runner.publish_address
        return self._runner.host_label if addr == "0.0.0.0" else addr

    def _state(self) -> dict[str, Any]:
        self._container.reload()
        state: dict[str, Any] = self._container.attrs["State"]
        return state

    def check_alive(self, grace: float = 0.0) -> None:
        """Raise the classified error (or CommandFailed) if the main process exited non-zero.

        With *grace* > 0, first wait that long for an exit: behind docker-init, a missing or
        unrunnable command fails just after start() returned.
        """
        if grace > 0:
            try:
                self._runner.client.api.wait(self.id, timeout=grace)
            except (requests.exceptions.RequestException, docker.errors.APIError):
                return  # still running after the grace period
        state = self._state()
        if state.get("Running") or state.get("Status") == "created":
            return
        out = text_of([self._container.logs(stdout=True, stderr=False)])
        err = text_of([self._container.logs(stdout=False, stderr=True)])
        code = int(state.get("ExitCode", -1))
        oom = bool(state.get("OOMKilled")) or self._runner.kernel_oom(self.id, code)
        result = self._runner.result(
            self.image, self.platform, self.argv, code, out, err,
            time.monotonic() - self._started, self.logs(), oom_killed=oom,
            mem_limit=self.mem_limit,
        )
        check_runs(result)

    def exec(
        self, cmd: Command, *, env: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> RunResult:
        """Run *cmd* in the container; classified like run(); RunTimeout after *timeout* s
        (default: the runner's run deadline for this platform)."""
        argv = as_argv(cmd)
        api = self._runner.client.api
        if timeout is None:
            timeout = self._runner.run_timeout_for(self.platform)
        started = time.monotonic()
        try:
            exec_id = api.exec_create(self.id, list(argv), environment=dict(env or {}))["Id"]
        except docker.errors.APIError as exc:
            # Not running (podman: 500 "container state improper"): say why the main process ended.
            if exc.status_code == 409 or "state improper" in str(exc.explanation):
                self.check_alive()
            raise RunnerError(
                f"cannot exec {short_cmd(argv)!r} in {self.name} ({self.image} on "
                f"{self.platform}): {exc.explanation or exc}"
            ) from exc
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["out"] = api.exec_start(exec_id, demux=True)
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self._kill_exec(exec_id)
            raise self._exec_timeout(argv, timeout)
        if isinstance(box.get("error"), ENGINE_LOST):
            raise engine_lost(box["error"], self._runner.target,
                              f"running {short_cmd(argv)!r} in {self.name}", started
                              ) from box["error"]
        if "error" in box:
            raise box["error"]
        stdout, stderr = box["out"]
        info = api.exec_inspect(exec_id)
        code = info.get("ExitCode")
        out, err = text_of([stdout or b""]), text_of([stderr or b""])
        if code in (126, 127) and any(m in (out + err).lower() for m in NOT_FOUND_MARKERS):
            code, err = 127, err + out  # the runtime reports on stdout; keep it with stderr
        oom = False
        if code not in (0, None):
            oom = bool(self._state().get("OOMKilled"))
        result = self._runner.result(
            self.image, self.platform, argv, -1 if code is None else int(code), out, err,
            time.monotonic() - started, out + err, oom_killed=oom, mem_limit=self.mem_limit,
        )
        return raise_classified(result)

    def _exec_timeout(self, argv: tuple[str, ...], timeout: float) -> RunTimeout:
        error = RunTimeout(
            f"{short_cmd(argv)!r} in {self.name} ({self.image} on {self.platform}, "
            f"{self._runner.describe(self.platform)}) did not finish within {timeout:.0f}s. "
            "Pass timeout=, raise --multiarch-run-timeout (scaled by the emulation factor), or "
            "look for a hang."
        )
        error.logs = self.logs()
        return error

    def _kill_exec(self, exec_id: str) -> None:
        # Docker cannot kill an exec; on the local engine its host pid is ours to signal.
        if not self._runner.is_local:
            return
        with contextlib.suppress(Exception):
            pid = int(self._runner.client.api.exec_inspect(exec_id).get("Pid") or 0)
            if pid > 0:
                os.kill(pid, signal.SIGKILL)

    def logs(self, tail: int | None = None) -> str:
        """The main process's stdout and stderr so far (also after stop()); the last *tail*
        lines only, if given."""
        if self._final_logs is not None:
            text = self._final_logs
        else:
            try:
                text = text_of([self._container.logs(stdout=True, stderr=True)])
            except (docker.errors.DockerException, requests.exceptions.RequestException,
                    OSError):
                return ""  # gone, or the engine went away: the log is a nice-to-have
        return text if tail is None else "\n".join(text.splitlines()[-tail:])

    @property
    def raw(self) -> Any:
        """The Docker SDK's container object, for what this handle does not wrap."""
        return self._container

    def running(self) -> bool:
        """Whether the main process runs (or restarts)."""
        state = self._state()
        return bool(state.get("Running") or state.get("Restarting"))

    def halt(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """Stop the main process (SIGTERM, SIGKILL after *timeout*; or SIGKILL at once with
        *kill*) but keep the container, to :meth:`resume` it."""
        if kill:
            self._container.kill()
            self._container.wait(timeout=int(timeout) + 5)
        else:
            self._container.stop(timeout=int(timeout))

    def resume(self) -> None:
        """Start the main process of a halted container again."""
        self._container.start()
        self._started = time.monotonic()

    def host_port(self, port: int, protocol: str = "tcp") -> int:
        """The host port the engine published for the container's *port*."""
        self._container.reload()
        ports: dict[str, Any] = self._container.attrs["NetworkSettings"]["Ports"] or {}
        bindings = ports.get(f"{port}/{protocol}")
        if not bindings:
            raise RunnerError(
                f"port {port}/{protocol} of {self.name} ({self.image} on {self.platform}) is not "
                f"published; pass ports=[{port}] to start()"
            )
        return int(bindings[0]["HostPort"])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and remove the container (and its anonymous volumes); keeps its logs."""
        if self._final_logs is not None:
            return
        self._final_logs = self.logs()
        with sigint_deferred(), contextlib.suppress(docker.errors.NotFound):
            self._container.stop(timeout=int(timeout))
            self._container.remove(force=True, v=True)

    def __enter__(self) -> EngineContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tar_of(files: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    """An uncompressed tar of *files* (absolute path → content), for ``put_archive("/")``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def text_of(chunks: Sequence[bytes]) -> str:
    """Output chunks as text (undecodable bytes replaced)."""
    return b"".join(chunks).decode("utf-8", errors="replace")
