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
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions

from pytest_multiarch.errors import (
    CommandNotFound,
    DigestMismatchError,
    EngineUnavailable,
    MultiarchError,
    NoDefaultCommand,
    PlatformMismatchError,
    RemoteHostArchMismatch,
    RunnerError,
    RunTimeout,
    UnknownPlatformError,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import (
    DEFAULT_MEM_LIMIT,
    DEFAULT_RUN_TIMEOUT,
    Command,
    RunResult,
    Session,
    as_argv,
    classify,
    parse_mem_limit,
    require_digest,
    short_cmd,
)
from pytest_multiarch.runners.docker.cleanup import reap_stale, remove_session, sigint_deferred
from pytest_multiarch.runners.docker.connection import _display, tls_from_env, unavailable
from pytest_multiarch.runners.docker.container import (
    NOT_FOUND_MARKERS,
    EngineContainer,
    tar_of,
    text_of,
)
from pytest_multiarch.runners.docker.podman import (
    init_exit_code,
    kernel_oom_killed,
    limits_ignored,
    memory_limit_refusal,
    podman_ulimits,
    socket_peer_pid,
    ulimit_refused,
)
from pytest_multiarch.runners.docker.ssh import SSHOptions, SSHTunnel, TunnelError
from pytest_multiarch.runners.docker.stream import ENGINE_LOST, KILL_GRACE, AttachedOutput, attach
from pytest_multiarch.runners.emulation import DEFAULT_FACTOR, run_deadline

__all__ = ["EngineContainer", "EngineRunner", "SSHOptions", "reap_stale", "tls_from_env"]

CONNECT_TIMEOUT = 10.0
API_TIMEOUT = 600.0  # pulls of big layers over a slow link
# How long start() watches for a main process that dies at once.  Behind docker-init (emulated
# platforms) even a missing command only fails after start() returned; natively runc reports
# that synchronously and the grace only catches a crash at start-up.
START_GRACE = 0.15
START_GRACE_EMULATED = 0.5
# podman (conmon, catatonit) takes about three times as long to report a dead main process.
PODMAN_GRACE_FACTOR = 3.0


class EngineRunner:
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
    ) -> None:
        self.url = url
        self.run_timeout = run_deadline(run_timeout, DEFAULT_RUN_TIMEOUT, 1.0)  # validates it
        self._factors: dict[str, float] = {}
        #: Seconds after a deadline for the engine to report the killed container's end.
        self.kill_grace = KILL_GRACE
        # A client handed in is borrowed: close() leaves it open for its owner.
        self._owns_client = client is None
        self.named_arch = named_arch
        self.platform = platform or named_arch
        self.session = session or Session.new()
        self.mem_limit = mem_limit
        parse_mem_limit(mem_limit)  # a bad value fails here, not at the first run
        self.init = init
        #: Set by the factory for its own podman service, whose registries.conf marks loopback
        #: and --multiarch-insecure-registry hosts insecure (podman.registries_conf).
        self.managed_registries = False
        self._tunnel: SSHTunnel | None = None
        self._checked: set[tuple[str, Platform]] = set()
        self._closed = False
        self._close_callbacks: list[Callable[[], None]] = []
        env = os.environ if environ is None else environ
        self._target = _display(url) if url else env.get("DOCKER_HOST", "the local engine")
        started = time.monotonic()
        try:
            self.client = client or self._connect(url, env, ssh or SSHOptions(), connect_timeout)
            info: dict[str, Any] = self.client.info()
            version: dict[str, Any] = self.client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException, TunnelError,
                OSError) as exc:
            if self._tunnel is not None:
                self._tunnel.close()
            raise self._unavailable(exc, time.monotonic() - started) from exc
        self.client.api.timeout = API_TIMEOUT
        self._inspect(info, version, self._service_pid(url, env))
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
            self.engine_arch = Platform.parse(str(info.get("Architecture", "")))
        except UnknownPlatformError as exc:
            self.close()
            raise RunnerError(
                f"engine {self._target} reports an unknown architecture "
                f"{info.get('Architecture')!r}"
            ) from exc
        named_arch = self.named_arch
        if named_arch is not None and self.engine_arch.arch_name != named_arch.arch_name:
            self.close()
            raise RemoteHostArchMismatch(
                f"engine {self._target} was named for {named_arch} but reports "
                f"{info.get('Architecture')} ({self.engine_arch}) as its own architecture, so its "
                f"results would not be native {named_arch} results. Fix the --arch-host entry: "
                f"name it {self.engine_arch.arch_name}={self._target}, or point "
                f"{named_arch.arch_name} at a real {named_arch.arch_name} host."
            )

    # -- connection ---------------------------------------------------------------------------

    def _connect(
        self, url: str | None, env: Mapping[str, str], ssh: SSHOptions, timeout: float
    ) -> docker.DockerClient:
        if url is None:
            return docker.DockerClient.from_env(timeout=int(timeout), environment=dict(env))
        scheme = urlsplit(url).scheme
        if scheme == "ssh":
            started = time.monotonic()
            self._tunnel = SSHTunnel(url, ssh, timeout)
            # One budget for the SSH handshake and the engine's first answer together.
            remaining = max(1, int(timeout - (time.monotonic() - started)))
            return docker.DockerClient(base_url=self._tunnel.url, timeout=remaining)
        if scheme == "tcp":
            return docker.DockerClient(base_url=url, tls=tls_from_env(env), timeout=int(timeout))
        if scheme == "unix":
            return docker.DockerClient(base_url=url, timeout=int(timeout))
        raise EngineUnavailable(
            f"unsupported engine URL {_display(url)!r}; use ssh://user@host[:port], "
            "tcp://host:port or unix:///path/to/docker.sock"
        )

    def _service_pid(self, url: str | None, env: Mapping[str, str]) -> int | None:
        """The engine's pid when it listens on a local unix socket."""
        target = url or env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if self._tunnel is not None or not target.startswith("unix://"):
            return None
        return socket_peer_pid(target.removeprefix("unix://"))

    def _unavailable(self, exc: BaseException, elapsed: float) -> MultiarchError:
        remote = self._tunnel.last_remote_error if self._tunnel is not None else None
        return unavailable(exc, elapsed, target=self._target, url=self.url,
                           named_arch=self.named_arch, remote_error=remote)

    # -- describe -----------------------------------------------------------------------------

    def is_emulated(self, platform: Platform) -> bool:
        """Whether *platform* runs under qemu-user on this engine (its arch differs)."""
        return not binfmt.is_native(platform, self.engine_arch)

    def describe(self, platform: Platform | None = None) -> str:
        """``emulated`` or ``native on HOST`` for *platform* (default: the one it was made for)."""
        plat = platform or self.platform or self.engine_arch
        return "emulated" if self.is_emulated(plat) else f"native on {self.host_label}"

    # -- images -------------------------------------------------------------------------------

    def ensure_image(self, image: str, platform: Platform) -> None:
        """Make sure the engine has *image* (by digest) and that it is of *platform*."""
        require_digest(image)
        if (image, platform) in self._checked:
            return
        try:
            found = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            try:
                self._pull(image, platform)
                found = self.client.images.get(image)
            except docker.errors.APIError as exc:
                if "filesystem layer verification failed" in str(exc.explanation or exc):
                    # the same corrupt blob the static checks report: one failure class for it
                    raise DigestMismatchError(
                        f"{self._target} refused a layer of {image} for {platform}: "
                        f"{exc.explanation or exc}. A blob in the registry does not hash to "
                        "its digest: push the image again."
                    ) from exc
                registry = image.split("/", 1)[0]
                insecure = (
                    "this podman service was started by pytest-multiarch with loopback and "
                    "--multiarch-insecure-registry hosts marked insecure; another plain-HTTP "
                    "registry needs --multiarch-insecure-registry=HOST."
                    if self.is_podman and self.managed_registries else
                    f"podman needs every plain-HTTP registry, loopback too, marked insecure: "
                    f'[[registry]] location="{registry}" insecure=true in a file under '
                    "/etc/containers/registries.conf.d/ on the engine's host."
                    if self.is_podman else
                    "plain HTTP registries other than 127.0.0.0/8 need insecure-registries in "
                    "its daemon.json."
                )
                raise RunnerError(
                    f"engine {self._target} could not pull {image} for {platform}: "
                    f"{exc.explanation or exc}. The engine pulls by itself, so the registry must "
                    "be reachable from it (a remote host's 127.0.0.1 is its own loopback); "
                    + insecure
                ) from exc
        attrs: dict[str, Any] = found.attrs
        actual = Platform.from_parts(
            str(attrs.get("Os") or "linux"), str(attrs.get("Architecture") or ""),
            str(attrs.get("Variant") or ""),
        )
        if actual != platform and not (
            actual.os == platform.os and actual.architecture == platform.architecture
            and not attrs.get("Variant")
        ):
            raise PlatformMismatchError(
                f"the engine's copy of {image} is {actual}, not {platform}: the digest names "
                f"another variant (or an index whose {actual} variant was pulled). Run the "
                f"{platform} variant by its own manifest digest (the {platform} entry of the "
                "index), not the index digest or a tag."
            )
        self._checked.add((image, platform))

    def _pull(self, image: str, platform: Platform) -> None:
        """Pull by digest; an error the engine reports inside the progress stream (podman
        reports them all there; the SDK's images.pull() drops them) raises APIError."""
        repository, digest = image.rsplit("@", 1)
        for event in self.client.api.pull(repository, tag=digest, platform=str(platform),
                                          stream=True, decode=True):
            error = event.get("error") if isinstance(event, dict) else None
            if error:
                raise docker.errors.APIError(str(error), explanation=str(error))

    # -- run ----------------------------------------------------------------------------------

    def _create_kwargs(
        self, image: str, platform: Platform, argv: tuple[str, ...] | None,
        env: Mapping[str, str] | None, mem_limit: str | None,
    ) -> dict[str, Any]:
        limit = mem_limit or self.mem_limit
        if self.limits_ignored and self.is_emulated(platform):
            raise memory_limit_refusal(self._target, image, platform)
        kwargs: dict[str, Any] = {
            "image": image,
            "platform": str(platform),
            "labels": self.session.labels(),
            "mem_limit": limit,
            "memswap_limit": limit,  # no swap: a balloon dies at the limit instead of thrashing
            "environment": dict(env or {}),
            "detach": True,
            # An init as PID 1 under emulation: a crashing emulated PID 1 otherwise hangs (the
            # kernel ignores qemu's re-raised SIGSEGV for init) instead of reporting "uncaught
            # target signal".  Not natively: docker-init's execvp retries an ENOEXEC binary as a
            # shell script, which turns a clean "exec format error" into a shell syntax error.
            "init": self.is_emulated(platform) if self.init is None else self.init,
        }
        if argv is not None:
            kwargs["command"] = list(argv)
        if self.ulimits is not None:
            kwargs["ulimits"] = list(self.ulimits)
        return kwargs

    def _create(self, kwargs: dict[str, Any], image: str, platform: Platform) -> Any:
        try:
            try:
                return self.client.containers.create(**kwargs)
            except docker.errors.ImageNotFound:
                # Removed from the engine since we checked it (an `image prune`): pull again.
                self._checked.discard((image, platform))
                self.ensure_image(image, platform)
                return self.client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "no command specified" in text.lower():
                raise NoDefaultCommand(
                    f"{image} on {platform} has no default command (its config has neither "
                    "Entrypoint nor Cmd); pass one, e.g. multiarch_run(ref, ['uname', '-m']) or "
                    "--multiarch-smoke-cmd."
                ) from exc
            raise RunnerError(
                f"engine {self._target} could not create a container of {image} for "
                f"{platform}: {text}"
            ) from exc

    def result(
        self, image: str, platform: Platform, argv: tuple[str, ...], exit_code: int,
        stdout: str, stderr: str, duration: float, logs: str, *, oom_killed: bool = False,
        mem_limit: str = "",
    ) -> RunResult:
        """A RunResult with this engine's facts (where, emulated, binfmt status on failure)."""
        emulated = self.is_emulated(platform)
        if self.is_podman:
            exit_code = init_exit_code(exit_code, stderr)
        status = None
        if emulated and exit_code != 0 and "exec format error" in stderr.lower():
            status = binfmt.preflight(platform, host=self.engine_arch)  # the state right now
        extra = {}
        if emulated and exit_code != 0 and "qemu" in stderr:
            extra["qemu_version"] = binfmt.qemu_version(platform) or ""
        where = self.describe(platform)
        if self.url is not None and emulated:
            where += f" on {self._target}"
        return RunResult(
            exit_code, stdout, stderr, duration, logs, image, platform, argv, where,
            emulated, oom_killed, mem_limit or self.mem_limit, status, extra,
        )

    def run_timeout_for(self, platform: Platform, timeout: float | None = None) -> float:
        """*timeout* if given, else this runner's default deadline scaled for *platform*."""
        return run_deadline(timeout, self.run_timeout,
                            self.emulation_factor(platform) if self.is_emulated(platform) else 1.0)

    def emulation_factor(self, platform: Platform) -> float:
        """The measured factor of *platform* (:meth:`set_emulation_factor`), else the default."""
        return self._factors.get(platform.arch_name, DEFAULT_FACTOR)

    def set_emulation_factor(self, platform: Platform, factor: float) -> None:
        """Scale default deadlines of *platform* by a measured emulation factor."""
        self._factors[platform.arch_name] = max(1.0, factor)

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
        """Run *cmd* in a fresh container of *image* (by digest) for *platform*; remove it.

        Returns the result for any exit code; raises the classified error for exec format
        error, missing emulator, qemu crash and OOM kill, :class:`RunTimeout` after *timeout*
        seconds (default: :attr:`run_timeout` scaled by the emulation factor; the container is
        killed), :class:`NoDefaultCommand` without any command, and :class:`EngineUnavailable`
        when the engine stops answering meanwhile.
        """
        self.ensure_image(image, platform)
        argv = as_argv(cmd) if cmd is not None else None
        job = _Job(image, platform, argv or (), mem_limit or self.mem_limit,
                   self.run_timeout_for(platform, timeout), time.monotonic())
        container = self._create(
            self._create_kwargs(image, platform, argv, env, job.limit), image, platform
        )
        lost = False
        try:
            return self._run_created(container, job)
        except ENGINE_LOST as exc:
            lost = True
            raise self.lost(exc, f"running {short_cmd(job.argv)!r} of {image} on {platform}",
                            job.started) from exc
        finally:
            # Never raises: a removal that fails must not hide the run's own result or error.
            # Not tried on a lost engine (a frozen one would hold us for the API timeout): what
            # is left there is reaped by the next session on this engine.
            if not lost:
                self.remove_quietly(container)

    def _run_created(self, container: Any, job: _Job) -> RunResult:
        """Attach, start, collect the output until exit or deadline, classify."""
        # Attached before start, like `docker run`: no output is lost, and stdout and stderr
        # stay apart while the logs keep their interleaving.  podman creates the runtime's
        # container on attach, so its start failures show here already.
        stream: AttachedOutput | None = None
        try:
            stream = attach(self.client.api, container.id,
                            job.started + job.budget + self.kill_grace)
            container.start()
        except docker.errors.APIError as exc:
            if stream is not None:
                stream.close()
            return self._start_failure(exc, job.image, job.platform, job.argv, job.started,
                                       job.limit)
        timed_out = threading.Event()
        watchdog = threading.Timer(job.budget, self._kill, (container, timed_out))
        watchdog.daemon = True
        watchdog.start()
        try:
            out, err, logs = _collect(stream)
            status = container.wait(timeout=self.kill_grace)
        finally:
            watchdog.cancel()
            stream.close()
        exit_code = int(status.get("StatusCode", -1))
        oom = False
        if exit_code != 0:
            container.reload()
            oom = bool(container.attrs["State"].get("OOMKilled")) or self.kernel_oom(
                container.id, exit_code)
        result = self.result(
            job.image, job.platform, job.argv, exit_code, text_of(out), text_of(err),
            time.monotonic() - job.started, text_of(logs), oom_killed=oom, mem_limit=job.limit,
        )
        if timed_out.is_set():
            raise _timeout_error(result, job.budget)
        classified = classify(result)
        if classified is not None:
            raise classified
        return result

    def lost(self, exc: BaseException, doing: str, started: float) -> EngineUnavailable:
        """The error for an engine that stopped answering while *doing* something."""
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return EngineUnavailable(
            f"engine {self._target} stopped answering while {doing}, after "
            f"{time.monotonic() - started:.1f}s: {cause}. Its containers may still run there: "
            "restart the engine; the next session on it removes what this one left."
        )

    def remove_quietly(self, container: Any) -> None:
        """Remove *container* (and its anonymous volumes); never raises."""
        with sigint_deferred(), contextlib.suppress(
            docker.errors.DockerException, requests.exceptions.RequestException, OSError
        ):
            container.remove(force=True, v=True)

    @staticmethod
    def _kill(container: Any, flag: threading.Event) -> None:
        flag.set()
        with contextlib.suppress(docker.errors.APIError):
            container.kill()

    def _start_failure(
        self, exc: docker.errors.APIError, image: str, platform: Platform,
        argv: tuple[str, ...], started: float, limit: str,
    ) -> RunResult:
        """A container that could not start: a missing command is exit 127; others classify."""
        text = str(exc.explanation or exc)
        lowered = text.lower()
        refused = ulimit_refused(text, self._target, image, platform, self.ulimits)
        if refused is not None:
            raise refused from exc
        if any(marker in lowered for marker in NOT_FOUND_MARKERS):
            code = 127
        elif "exec format error" in lowered or "permission denied" in lowered:
            code = 126
        else:
            raise RunnerError(
                f"engine {self._target} could not start {short_cmd(argv)!r} of {image} for "
                f"{platform}: {text}"
            ) from exc
        result = self.result(image, platform, argv, code, "", text + "\n",
                             time.monotonic() - started, text + "\n", mem_limit=limit)
        classified = classify(result)
        if classified is not None:
            raise classified from exc
        return result

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
        kwargs = self._start_kwargs(
            self._create_kwargs(image, platform, argv, env, limit), ports=ports, name=name,
            network=network, entrypoint=entrypoint, tmpfs=tmpfs, volumes=volumes,
            network_aliases=network_aliases, labels=labels,
        )
        started = time.monotonic()
        container = self._create(kwargs, image, platform)
        try:
            if files:
                container.put_archive("/", tar_of(files))
            try:
                container.start()
            except docker.errors.APIError as exc:
                result = self._start_failure(exc, image, platform, argv or (), started, limit)
                raise CommandNotFound(
                    f"{short_cmd(argv or ())!r} in {image} on {platform}: command not found "
                    f"({result.stderr.strip()})"
                ) from exc
            handle = EngineContainer(self, container, image, platform, argv or (), limit)
            emulated_init = kwargs.get("init") and self.is_emulated(platform)
            grace = START_GRACE_EMULATED if emulated_init else START_GRACE
            handle.check_alive(grace=grace * (PODMAN_GRACE_FACTOR if self.is_podman else 1))
            return handle
        except BaseException:
            self.remove_quietly(container)
            raise

    def _start_kwargs(
        self, kwargs: dict[str, Any], *, ports: Sequence[int | str], name: str | None,
        network: str | None, entrypoint: Command | None, tmpfs: Mapping[str, str] | None,
        volumes: Mapping[str, Mapping[str, str]] | None, network_aliases: Sequence[str],
        labels: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """*kwargs* of :meth:`_create_kwargs` plus what only long-running containers use."""
        kwargs["ports"] = {
            (str(p) if "/" in str(p) else f"{p}/tcp"): (self.publish_address, None) for p in ports
        }
        kwargs["labels"] = {**(labels or {}), **kwargs["labels"]}  # session labels win
        if name:
            kwargs["name"] = name
        if network:
            kwargs["network"] = network
            if network_aliases:
                kwargs["networking_config"] = {
                    network: self.client.api.create_endpoint_config(aliases=list(network_aliases))
                }
        if entrypoint is not None:
            kwargs["entrypoint"] = list(as_argv(entrypoint))
        if tmpfs:
            kwargs["tmpfs"] = dict(tmpfs)
        if volumes:
            kwargs["volumes"] = {k: dict(v) for k, v in volumes.items()}
        return kwargs

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

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Job:
    """One run's fixed facts."""

    image: str
    platform: Platform
    argv: tuple[str, ...]
    limit: str
    budget: float
    started: float


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
