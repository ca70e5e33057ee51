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
from pathlib import Path
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
    RemoteHostUnavailable,
    RunnerError,
    RunTimeout,
    UnknownPlatformError,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import (
    DEFAULT_MEM_LIMIT,
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
from pytest_multiarch.runners.docker.container import NOT_FOUND_MARKERS, EngineContainer, text_of
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


def tls_from_env(environ: Mapping[str, str]) -> docker.tls.TLSConfig | bool:
    """TLS settings by Docker's conventions: ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``.

    TLS is on when either is set; ``DOCKER_TLS_VERIFY`` (any value but empty) also verifies the
    server against ``ca.pem``.  Certificates default to ``~/.docker/{ca,cert,key}.pem``.
    """
    verify = environ.get("DOCKER_TLS_VERIFY")
    cert_path = environ.get("DOCKER_CERT_PATH") or ""
    if not cert_path and not verify:
        return False
    base = Path(cert_path) if cert_path else Path.home() / ".docker"
    cert, key, ca = base / "cert.pem", base / "key.pem", base / "ca.pem"
    return docker.tls.TLSConfig(
        client_cert=(str(cert), str(key)) if cert.exists() and key.exists() else None,
        ca_cert=str(ca) if verify else None,
        verify=bool(verify),
    )


def _display(url: str) -> str:
    """The URL without any password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


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
    ) -> None:
        self.url = url
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
            self.client = self._connect(url, env, ssh or SSHOptions(), connect_timeout)
            info: dict[str, Any] = self.client.info()
            version: dict[str, Any] = self.client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException, TunnelError,
                OSError) as exc:
            if self._tunnel is not None:
                self._tunnel.close()
            raise self._unavailable(exc, time.monotonic() - started) from exc
        self.client.api.timeout = API_TIMEOUT
        self.engine_name = str(info.get("Name") or "")
        self.is_podman = any(
            "podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or ()
        )
        # podman's defaults exceed this VM's hard limits (TESTBED.md): cap them at its own.
        self.ulimits = podman_ulimits(self._service_pid(url, env)) if self.is_podman else None
        self.limits_ignored = self.is_podman and limits_ignored(self.client)
        try:
            self.engine_arch = Platform.parse(str(info.get("Architecture", "")))
        except UnknownPlatformError as exc:
            self.close()
            raise RunnerError(
                f"engine {self._target} reports an unknown architecture "
                f"{info.get('Architecture')!r}"
            ) from exc
        if named_arch is not None and self.engine_arch.arch_name != named_arch.arch_name:
            self.close()
            raise RemoteHostArchMismatch(
                f"engine {self._target} was named for {named_arch} but reports "
                f"{info.get('Architecture')} ({self.engine_arch}) as its own architecture, so its "
                f"results would not be native {named_arch} results. Fix the --arch-host entry: "
                f"name it {self.engine_arch.arch_name}={self._target}, or point "
                f"{named_arch.arch_name} at a real {named_arch.arch_name} host."
            )
        host = urlsplit(url).hostname if url and not url.startswith("unix:") else None
        self.host_label = host or self.engine_name or socket.gethostname()
        self.publish_address = publish_address or (
            "0.0.0.0" if host and host not in ("127.0.0.1", "localhost", "::1") else "127.0.0.1"
        )
        # Runs at interpreter exit (an uncaught KeyboardInterrupt included) unless close() ran.
        self._finalizer = weakref.finalize(self, EngineRunner._atexit_cleanup, weakref.ref(self))

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
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._tunnel is not None and self._tunnel.last_remote_error:
            cause += f" (remote: {self._tunnel.last_remote_error})"
        if self.named_arch is None:
            start = (
                f"start podman's service (podman system service --time=0 {self._target} &)"
                if "podman" in self._target else
                "start one (setsid dockerd >/var/log/dockerd.log 2>&1 &), set DOCKER_HOST"
            )
            return EngineUnavailable(
                f"no container engine answers at {self._target} after {elapsed:.1f}s: {cause}. "
                f"Fix: {start}, or use --engine=rootfs to run without an engine."
            )
        hint = (
            "check that the host is up, sshd accepts the key and its host key is in known_hosts, "
            "and that the user can run `docker` there"
            if self.url and self.url.startswith("ssh:")
            else f"check that the host is up and the engine listens there (docker -H {self._target}"
            " info); for TLS set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"
        )
        return RemoteHostUnavailable(
            f"remote engine {self._target} for {self.named_arch} did not answer after "
            f"{elapsed:.1f}s: {cause}. Hint: {hint}; or drop the --arch-host entry to emulate "
            f"{self.named_arch} locally."
        )

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
        seconds (the container is killed), :class:`NoDefaultCommand` without any command.
        """
        self.ensure_image(image, platform)
        argv = as_argv(cmd) if cmd is not None else None
        shown = argv or ()
        limit = mem_limit or self.mem_limit
        started = time.monotonic()
        container = self._create(
            self._create_kwargs(image, platform, argv, env, limit), image, platform
        )
        timed_out = threading.Event()
        stream: Any = None
        try:
            out: list[bytes] = []
            err: list[bytes] = []
            logs: list[bytes] = []
            # Attached before start, like `docker run`: no output is lost, and stdout and
            # stderr stay apart while the logs keep their interleaving.  podman creates the
            # runtime's container on attach, so its start failures show here already.
            try:
                stream = self.client.api.attach(
                    container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
                )
                container.start()
            except docker.errors.APIError as exc:
                return self._start_failure(exc, image, platform, shown, started, limit)
            watchdog = None
            if timeout is not None:
                watchdog = threading.Timer(timeout, self._kill, (container, timed_out))
                watchdog.daemon = True
                watchdog.start()
            try:
                for chunk_out, chunk_err in stream:
                    if chunk_out:
                        out.append(chunk_out)
                        logs.append(chunk_out)
                    if chunk_err:
                        err.append(chunk_err)
                        logs.append(chunk_err)
                status = container.wait()
            finally:
                if watchdog is not None:
                    watchdog.cancel()
            exit_code = int(status.get("StatusCode", -1))
            oom = False
            if exit_code != 0:
                container.reload()
                oom = bool(container.attrs["State"].get("OOMKilled")) or self.kernel_oom(
                    container.id, exit_code)
            result = self.result(
                image, platform, shown, exit_code, text_of(out), text_of(err),
                time.monotonic() - started, text_of(logs), oom_killed=oom, mem_limit=limit,
            )
            if timed_out.is_set():
                error: RunnerError = RunTimeout(
                    f"{short_cmd(shown)!r} in {image} on {platform} ({result.where}) did not "
                    f"finish within {timeout:.0f}s and was killed. Under emulation this may "
                    "just be slow: scale the timeout by the emulation factor "
                    "(pytest_multiarch.runners.emulation.scale_timeout) or look for a hang in "
                    "the logs."
                )
                error.logs = result.logs
                raise error
            classified = classify(result)
            if classified is not None:
                raise classified
            return result
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            with sigint_deferred(), contextlib.suppress(docker.errors.APIError):
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
    ) -> EngineContainer:
        """Start a container and return its handle (exec, logs, host_port, stop).

        *ports* are published on ephemeral host ports of :attr:`publish_address`.  Raises
        :class:`CommandNotFound` / the classified error when the main process cannot start, or
        dies at once.
        """
        self.ensure_image(image, platform)
        argv = as_argv(cmd) if cmd is not None else None
        limit = mem_limit or self.mem_limit
        kwargs = self._create_kwargs(image, platform, argv, env, limit)
        kwargs["ports"] = {
            (str(p) if "/" in str(p) else f"{p}/tcp"): (self.publish_address, None) for p in ports
        }
        if name:
            kwargs["name"] = name
        if network:
            kwargs["network"] = network
        if entrypoint is not None:
            kwargs["entrypoint"] = list(as_argv(entrypoint))
        if tmpfs:
            kwargs["tmpfs"] = dict(tmpfs)
        if volumes:
            kwargs["volumes"] = {k: dict(v) for k, v in volumes.items()}
        started = time.monotonic()
        container = self._create(kwargs, image, platform)
        try:
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
            with sigint_deferred(), contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
            raise

    def create_network(self, name: str) -> str:
        """A labelled bridge network; returns its name.  Removed by :meth:`cleanup`."""
        network = self.client.networks.create(name, driver="bridge", labels=self.session.labels())
        return str(network.name)

    def create_volume(self, name: str) -> str:
        """A labelled volume; returns its name.  Removed by :meth:`cleanup`."""
        volume = self.client.volumes.create(name, labels=self.session.labels())
        return str(volume.name)

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

    @staticmethod
    def _atexit_cleanup(ref: weakref.ref[EngineRunner]) -> None:
        runner = ref()
        if runner is not None:
            runner.close()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
