"""Run variants on a Docker API engine: the local one (emulating through binfmt_misc) or a remote
native host reached by ``ssh://user@host[:port]``, ``tcp://host:port`` or ``unix://path``.

Images always run by digest with the platform set (local stores key by tag, not platform, so a
tag can silently run the wrong variant), and the engine's copy is checked to be of that platform.
Every container, network and volume carries the session's labels
(:meth:`~pytest_multiarch.runners.base.Session.labels`) and a memory limit; :meth:`cleanup`
removes the session's objects and :func:`reap_stale` those of dead sessions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions

from pytest_multiarch.errors import (
    IllegalInstruction,
    MultiarchError,
    RunnerError,
)
from pytest_multiarch.host import binfmt, cpu
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import (
    DEFAULT_MEM_LIMIT,
    DEFAULT_RUN_TIMEOUT,
    Command,
    RunResult,
    Session,
    as_argv,
    require_digest,
    short_cmd,
)
from pytest_multiarch.runners.classify import emulator_facts, under_max
from pytest_multiarch.runners.common import RunnerBase
from pytest_multiarch.runners.docker.cleanup import reap_stale, remove_session, sigint_deferred
from pytest_multiarch.runners.docker.connection import (
    connect,
    display_url,
    engine_arch,
    engine_lost,
    service_pid,
    tls_from_env,
)
from pytest_multiarch.runners.docker.container import EngineContainer, launch
from pytest_multiarch.runners.docker.create import (
    create_container,
    create_kwargs,
    start_kwargs,
)
from pytest_multiarch.runners.docker.images import ensure_image
from pytest_multiarch.runners.docker.oneshot import Job, run_created
from pytest_multiarch.runners.docker.podman import (
    init_exit_code,
    kernel_oom_killed,
    limits_ignored,
    podman_ulimits,
)
from pytest_multiarch.runners.docker.ssh import SSHOptions, SSHTunnel
from pytest_multiarch.runners.docker.stream import ENGINE_LOST, KILL_GRACE

__all__ = ["EngineContainer", "EngineRunner", "SSHOptions", "reap_stale", "tls_from_env"]

CONNECT_TIMEOUT = 10.0
API_TIMEOUT = 600.0  # pulls of big layers over a slow link

class EngineRunner(RunnerBase):
    """A :class:`~pytest_multiarch.runners.base.Runner` on one Docker API engine.

    *url* ``None`` is the local engine as ``DOCKER_HOST``/``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``
    say (default ``unix:///var/run/docker.sock``).  *named_arch* is the architecture the engine
    was named for (``--arch-host=ARCH=URL``): the engine's own ``Architecture`` must be that one,
    and an engine that does not answer within *connect_timeout* is
    :class:`~pytest_multiarch.errors.RemoteHostUnavailable` rather than
    :class:`~pytest_multiarch.errors.EngineUnavailable`.  Connects on construction.

    *mem_limit* is every container's default memory limit (swap included).  *init* runs
    docker-init as PID 1: ``None`` (default) does so for emulated platforms only.  *ssh* says how to
    authenticate ``ssh://`` URLs; *environ* replaces ``os.environ`` for the ``DOCKER_*``
    variables; ports are published on *publish_address* (default 127.0.0.1 for a local engine).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        platform: Platform | None = None,
        named_arch: Platform | None = None,
        session: Session | None = None,
        mem_limit: str = DEFAULT_MEM_LIMIT,
        connect_timeout: float = CONNECT_TIMEOUT,
        ssh: SSHOptions | None = None,
        environ: Mapping[str, str] | None = None,
        publish_address: str | None = None,
        init: bool | None = None,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        client: docker.DockerClient | None = None,
        cpu_models: Mapping[str, str] | None = None,
        cpu_source: str = "option",
    ) -> None:
        super().__init__(session=session, mem_limit=mem_limit, run_timeout=run_timeout,
                         cpu_models=cpu_models, cpu_source=cpu_source)
        self.url = url
        #: Seconds after a deadline for the engine to report the killed container's end.
        self.kill_grace = KILL_GRACE
        # A client handed in is borrowed: close() leaves it open for its owner.
        self._owns_client = client is None
        self.named_arch = named_arch
        self.platform = platform or named_arch
        self.init = init
        #: Set by the factory for its own podman service, whose registries.conf marks loopback
        #: and --multiarch-insecure-registry hosts insecure (podman.registries_conf).
        self.managed_registries = False
        self._checked: set[tuple[str, Platform]] = set()
        self._closed = False
        self._close_callbacks: list[Callable[[], None]] = []
        env = os.environ if environ is None else environ
        #: The engine's URL without a password (or where DOCKER_HOST points), for messages.
        self.target = display_url(url) if url else env.get("DOCKER_HOST", "the local engine")
        connected = connect(url, env, ssh=ssh or SSHOptions(), timeout=connect_timeout,
                            target=self.target, named_arch=named_arch, client=client)
        self.client = connected.client
        self._tunnel: SSHTunnel | None = connected.tunnel
        self.client.api.timeout = API_TIMEOUT
        self._inspect(connected.info, connected.version, service_pid(url, env, self._tunnel))
        host = urlsplit(url).hostname if url and not url.startswith("unix:") else None
        self.host_label = host or self.engine_name or socket.gethostname()
        self.publish_address = publish_address or (
            "0.0.0.0" if host and host not in ("127.0.0.1", "localhost", "::1") else "127.0.0.1"
        )
        # Runs at interpreter exit (an uncaught KeyboardInterrupt included) unless close() ran.
        self._finalizer = weakref.finalize(self, EngineRunner._atexit_cleanup, weakref.ref(self))

    def _inspect(self, info: Mapping[str, Any], version: Mapping[str, Any],
                 service_pid: int | None) -> None:
        """What the engine is (podman or not, its limits, its architecture); the architecture
        must be the one it was named for."""
        self.engine_name = str(info.get("Name") or "")
        self.is_podman = any(
            "podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or ()
        )
        # podman's defaults exceed this VM's hard limits (TESTBED.md): cap them at its own.
        self.ulimits = podman_ulimits(service_pid) if self.is_podman else None
        self.limits_ignored = self.is_podman and limits_ignored(self.client)
        try:
            self.engine_arch = engine_arch(info, self.target, self.named_arch)
        except RunnerError:
            self.close()
            raise

    # -- describe -----------------------------------------------------------------------------

    def is_emulated(self, platform: Platform) -> bool:
        """Whether *platform* runs under qemu-user on this engine (its arch differs)."""
        return not binfmt.is_native(platform, self.engine_arch)

    def describe(self, platform: Platform | None = None) -> str:
        """``emulated`` or ``native on HOST`` for *platform* (default: the one it was made for)."""
        plat = platform or self.platform or self.engine_arch
        return "emulated" if self.is_emulated(plat) else f"native on {self.host_label}"

    def host_cpu(self, image: str, platform: Platform) -> cpu.HostCpu | None:
        """A native engine's CPU, from ``/proc/cpuinfo`` in a tiny container of *image* (by
        digest); None when emulated or when the image cannot show it (no ``cat``)."""
        if self.is_emulated(platform):
            return None
        try:
            result = self.run(image, platform, ["cat", "/proc/cpuinfo"], timeout=60)
        except MultiarchError:
            return None
        return cpu.describe_cpuinfo(result.stdout, platform) if result.ok else None

    # -- images -------------------------------------------------------------------------------

    def ensure_image(self, image: str, platform: Platform) -> None:
        """Make sure the engine has *image* (by digest) and that it is of *platform*."""
        require_digest(image)
        if (image, platform) in self._checked:
            return
        ensure_image(self.client, image, platform, target=self.target, podman=self.is_podman,
                     managed_registries=self.managed_registries)
        self._checked.add((image, platform))

    def forget_image(self, image: str, platform: Platform) -> None:
        """Check *image* again at its next use (the engine lost it since)."""
        self._checked.discard((image, platform))

    # -- run ----------------------------------------------------------------------------------

    def result(
        self, image: str, platform: Platform, argv: tuple[str, ...], exit_code: int,
        stdout: str, stderr: str, duration: float, logs: str, *, oom_killed: bool = False,
        mem_limit: str = "", cpu_model: str | None = None,
    ) -> RunResult:
        """A RunResult with this engine's facts (where, emulated, binfmt status on failure)."""
        emulated = self.is_emulated(platform)
        if self.is_podman:
            exit_code = init_exit_code(exit_code, stderr)
        status, extra = emulator_facts(platform, host=self.engine_arch, emulated=emulated,
                                       exit_code=exit_code, stderr=stderr)
        where = self.describe(platform)
        if self.url is not None and emulated:
            where += f" on {self.target}"
        if cpu_model is None:
            cpu_model = self.chosen_model(platform)
        if emulated:
            where += f", cpu {cpu_model or 'qemu default'}"
        return RunResult(
            exit_code, stdout, stderr, duration, logs, image, platform, argv, where,
            emulated, oom_killed, mem_limit or self.mem_limit, status, extra, cpu_model,
        )

    def run(
        self,
        image: str,
        platform: Platform,
        cmd: Command | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        mem_limit: str | None = None,
        cpu_model: str | None = None,
    ) -> RunResult:
        """Run *cmd* in a fresh container of *image* (by digest) for *platform*; remove it.

        Returns the result for any exit code; raises the classified error for exec format
        error, missing emulator, qemu crash, illegal instruction (re-run once under ``max`` to
        say whether the CPU level is the cause) and OOM kill, :class:`RunTimeout` after
        *timeout* seconds (default: :attr:`run_timeout` scaled by the emulation factor; the
        container is killed), :class:`NoDefaultCommand` without any command, and
        :class:`EngineUnavailable` when the engine stops answering meanwhile.  *cpu_model*
        overrides the qemu CPU model for this run.
        """
        self.ensure_image(image, platform)
        argv = as_argv(cmd) if cmd is not None else None
        job = Job(image, platform, argv or (), mem_limit or self.mem_limit,
                  self.run_timeout_for(platform, timeout), time.monotonic(), cpu_model)
        container = create_container(
            self, create_kwargs(self, image, platform, argv, env, job.limit, cpu_model), image,
            platform,
        )
        lost = False
        try:
            return run_created(self, container, job)
        except IllegalInstruction as exc:
            raise under_max(
                exc, platform, emulated=self.is_emulated(platform), asked=cpu_model,
                ran_on=self.chosen_model(platform),
                again=lambda newest: self.run(image, platform, cmd, env=env, timeout=timeout,
                                              mem_limit=job.limit, cpu_model=newest),
            ) from None
        except ENGINE_LOST as exc:
            lost = True
            raise engine_lost(exc, self.target,
                              f"running {short_cmd(job.argv)!r} of {image} on {platform}",
                              job.started) from exc
        finally:
            # Never raises: a removal that fails must not hide the run's own result or error.
            # Not tried on a lost engine (a frozen one would hold us for the API timeout): what
            # is left there is reaped by the next session on this engine.
            if not lost:
                self.remove_quietly(container)

    def container_settings(self, image: str, platform: Platform) -> dict[str, Any]:
        """The ``containers.create()`` arguments of this runner's containers of *image* (labels,
        platform, memory, init, ``QEMU_CPU``, ulimits), for those other code creates here."""
        return create_kwargs(self, image, platform, None, None, None)

    def remove_quietly(self, container: Any) -> None:
        """Remove *container* (and its anonymous volumes); never raises."""
        with sigint_deferred(), contextlib.suppress(
            docker.errors.DockerException, requests.exceptions.RequestException, OSError
        ):
            container.remove(force=True, v=True)

    # -- long-running containers ------------------------------------------------------------

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
    ) -> EngineContainer:
        """Start a container and return its handle (exec, logs, host_port, stop).

        *ports* are published on ephemeral host ports of :attr:`publish_address`; *files*
        (absolute path → content) are copied in before the start; *labels* join the session's.
        Raises :class:`CommandNotFound` / the classified error when the main process cannot
        start, or dies at once.
        """
        self.ensure_image(image, platform)
        argv = as_argv(cmd) if cmd is not None else None
        limit = mem_limit or self.mem_limit
        kwargs = start_kwargs(
            self, create_kwargs(self, image, platform, argv, env, limit), ports=ports, name=name,
            network=network, entrypoint=entrypoint, tmpfs=tmpfs, volumes=volumes,
            network_aliases=network_aliases, labels=labels,
        )
        container = create_container(self, kwargs, image, platform)
        return launch(self, container, image, platform, argv or (), limit, files=files)

    def create_network(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """A labelled bridge network; returns its name.  Removed by :meth:`cleanup`."""
        network = self.client.networks.create(
            name, driver="bridge", labels={**(labels or {}), **self.session.labels()})
        return str(network.name)

    def create_volume(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """A labelled volume; returns its name.  Removed by :meth:`cleanup`."""
        volume = self.client.volumes.create(
            name, labels={**(labels or {}), **self.session.labels()})
        return str(volume.name)

    def remove_network(self, name: str) -> None:
        """Remove a network this session created; never raises (what is left is reaped)."""
        with sigint_deferred(), contextlib.suppress(
            docker.errors.DockerException, requests.exceptions.RequestException, OSError
        ):
            self.client.networks.get(name).remove()

    def kernel_oom(self, container_id: str, exit_code: int) -> bool:
        """podman on cgroup v1 does not report OOMKilled: ask the kernel log (local engine)."""
        return self.is_podman and exit_code == 137 and self.is_local and kernel_oom_killed(
            container_id)

    @property
    def is_local(self) -> bool:
        """Whether the engine runs on this host (its processes and kernel log are ours)."""
        if self._tunnel is not None:
            return False
        return self.url is None or self.url.startswith("unix:")

    # -- cleanup ------------------------------------------------------------------------------

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call *callback* at the end of :meth:`close` (e.g. stop a private podman service)."""
        self._close_callbacks.append(callback)

    def cleanup(self) -> int:
        """Remove every container, network and volume of this session; returns how many."""
        return remove_session(self.client, self.session.id)

    def close(self) -> None:
        """Clean up the session's objects and close the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            with sigint_deferred():
                self.cleanup()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass
        finally:
            if self._owns_client:
                with contextlib.suppress(Exception):
                    self.client.close()
            if self._tunnel is not None:
                self._tunnel.close()
            for callback in reversed(self._close_callbacks):
                with contextlib.suppress(Exception):
                    callback()
            finalizer = getattr(self, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()

    def release(self) -> None:
        """Forget this runner without removing anything: for a runner made around a borrowed
        client (``client=``) whose owner removes its objects itself; idempotent."""
        self._closed = True
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()

    @staticmethod
    def _atexit_cleanup(ref: weakref.ref[EngineRunner]) -> None:
        runner = ref()
        if runner is not None:
            runner.close()

