"""Reaching a Docker API engine: the client for a URL (an SSH tunnel for ``ssh://``), TLS by
Docker's conventions, URLs without passwords for messages, and the error for an engine that does
not answer (local, or a named remote host).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions

from pytest_multiarch.errors import (
    EngineUnavailable,
    MultiarchError,
    RemoteHostArchMismatch,
    RemoteHostUnavailable,
    RunnerError,
    UnknownPlatformError,
)
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.docker.podman import socket_peer_pid
from pytest_multiarch.runners.docker.ssh import SSHOptions, SSHTunnel, TunnelError

__all__ = ["Connected", "connect", "display_url", "engine_arch", "engine_lost", "service_pid",
           "tls_from_env", "unavailable"]


@dataclass(frozen=True, slots=True)
class Connected:
    """An engine that answered: its client, the SSH tunnel it goes through, and what it said."""

    client: docker.DockerClient
    tunnel: SSHTunnel | None
    info: dict[str, Any]
    version: dict[str, Any]


def connect(
    url: str | None, env: Mapping[str, str], *, ssh: SSHOptions, timeout: float,
    target: str, named_arch: Platform | None, client: docker.DockerClient | None = None,
) -> Connected:
    """Connect to the engine at *url* (None: as ``DOCKER_HOST`` in *env* says) and ask what it
    is; *client* is one already made.  Raises :func:`unavailable`'s error when it does not
    answer within *timeout* seconds."""
    started = time.monotonic()
    tunnel: SSHTunnel | None = None
    try:
        if client is None:
            if url is not None and urlsplit(url).scheme == "ssh":
                tunnel = SSHTunnel(url, ssh, timeout)
            client = _client(url, env, tunnel, timeout, started)
        info: dict[str, Any] = client.info()
        version: dict[str, Any] = client.version()
    except (docker.errors.DockerException, requests.exceptions.RequestException, TunnelError,
            OSError) as exc:
        if tunnel is not None:
            tunnel.close()
        remote = tunnel.last_remote_error if tunnel is not None else None
        raise unavailable(exc, time.monotonic() - started, target=target, url=url,
                          named_arch=named_arch, remote_error=remote) from exc
    return Connected(client, tunnel, info, version)


def _client(url: str | None, env: Mapping[str, str], tunnel: SSHTunnel | None, timeout: float,
            started: float) -> docker.DockerClient:
    if url is None:
        return docker.DockerClient.from_env(timeout=int(timeout), environment=dict(env))
    if tunnel is not None:
        # One budget for the SSH handshake and the engine's first answer together.
        remaining = max(1, int(timeout - (time.monotonic() - started)))
        return docker.DockerClient(base_url=tunnel.url, timeout=remaining)
    scheme = urlsplit(url).scheme
    if scheme == "tcp":
        return docker.DockerClient(base_url=url, tls=tls_from_env(env), timeout=int(timeout))
    if scheme == "unix":
        return docker.DockerClient(base_url=url, timeout=int(timeout))
    raise EngineUnavailable(
        f"unsupported engine URL {display_url(url)!r}; use ssh://user@host[:port], "
        "tcp://host:port or unix:///path/to/docker.sock"
    )


def service_pid(url: str | None, env: Mapping[str, str], tunnel: SSHTunnel | None) -> int | None:
    """The engine's pid when it listens on a local unix socket."""
    target = url or env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if tunnel is not None or not target.startswith("unix://"):
        return None
    return socket_peer_pid(target.removeprefix("unix://"))


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


def display_url(url: str) -> str:
    """The URL without any password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


def unavailable(
    exc: BaseException, elapsed: float, *, target: str, url: str | None,
    named_arch: Platform | None, remote_error: str | None = None,
) -> MultiarchError:
    """The error for an engine at *target* that did not answer within *elapsed* seconds."""
    cause = _first_line(exc)
    if remote_error:
        cause += f" (remote: {remote_error})"
    if named_arch is None:
        start = (
            f"start podman's service (podman system service --time=0 {target} &)"
            if "podman" in target else
            "start one (setsid dockerd >/var/log/dockerd.log 2>&1 &), set DOCKER_HOST"
        )
        return EngineUnavailable(
            f"no container engine answers at {target} after {elapsed:.1f}s: {cause}. "
            f"Fix: {start}, or use --engine=rootfs to run without an engine."
        )
    hint = (
        "check that the host is up, sshd accepts the key and its host key is in known_hosts, "
        "and that the user can run `docker` there"
        if url and url.startswith("ssh:")
        else f"check that the host is up and the engine listens there (docker -H {target}"
        " info); for TLS set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"
    )
    return RemoteHostUnavailable(
        f"remote engine {target} for {named_arch} did not answer after "
        f"{elapsed:.1f}s: {cause}. Hint: {hint}; or drop the --arch-host entry to emulate "
        f"{named_arch} locally."
    )


def engine_lost(exc: BaseException, target: str, doing: str, started: float) -> EngineUnavailable:
    """The error for the engine at *target* that stopped answering while *doing* something."""
    cause = _first_line(exc)
    return EngineUnavailable(
        f"engine {target} stopped answering while {doing}, after "
        f"{time.monotonic() - started:.1f}s: {cause}. Its containers may still run there: "
        "restart the engine; the next session on it removes what this one left."
    )


def engine_arch(info: Mapping[str, Any], target: str, named_arch: Platform | None) -> Platform:
    """The architecture the engine at *target* reports (``info``); it must be *named_arch*'s
    when the engine was named for one (``--arch-host``)."""
    try:
        arch = Platform.parse(str(info.get("Architecture", "")))
    except UnknownPlatformError as exc:
        raise RunnerError(
            f"engine {target} reports an unknown architecture {info.get('Architecture')!r}"
        ) from exc
    if named_arch is not None and arch.arch_name != named_arch.arch_name:
        raise RemoteHostArchMismatch(
            f"engine {target} was named for {named_arch} but reports "
            f"{info.get('Architecture')} ({arch}) as its own architecture, so its "
            f"results would not be native {named_arch} results. Fix the --arch-host entry: "
            f"name it {arch.arch_name}={target}, or point "
            f"{named_arch.arch_name} at a real {named_arch.arch_name} host."
        )
    return arch


def _first_line(exc: BaseException) -> str:
    """The first line of *exc*'s message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
