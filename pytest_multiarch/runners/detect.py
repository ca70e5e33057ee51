"""Which container engine a session uses, and a private podman API service when none runs.

:func:`detect` turns ``--engine=auto|docker|podman|rootfs`` into an :class:`EngineChoice`
(kind, URL and why), probing sockets with a plain ``GET /_ping`` (a few milliseconds each; the
``Libpod-Api-Version`` header tells podman from Docker):

* ``auto``: the Docker engine (``DOCKER_HOST``, default ``unix:///var/run/docker.sock``) if it
  answers, else a podman socket that answers (``CONTAINER_HOST``, rootful
  ``/run/podman/podman.sock``, rootless ``$XDG_RUNTIME_DIR/podman/podman.sock``), else the rootfs
  runner.  It never starts a service by itself.
* ``docker``: ``DOCKER_HOST`` (or the default socket), unprobed: the runner's connect error says
  what is wrong.
* ``podman``: the first podman socket that answers; a ``CONTAINER_HOST`` that does not answer is an
  error.  When none answers, the choice says to start a service
  (:class:`~pytest_multiarch.runners.podman_service.PodmanService`, on a socket private to the
  session).

No pytest and no Docker SDK here (the SDK is imported only to probe TLS and ssh:// engines).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pytest_multiarch.errors import EngineUnavailable

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "ROOTFUL_PODMAN_SOCKET",
    "EngineChoice",
    "Probe",
    "detect",
    "podman_sockets",
    "probe",
]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ROOTFUL_PODMAN_SOCKET = "/run/podman/podman.sock"
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class EngineChoice:
    """The engine a session runs on: ``docker``, ``podman`` or ``rootfs``, where, and why.

    *url* is None for ``rootfs`` and for a podman service still to be started
    (*start_service*).  *from_env*: connect as ``DOCKER_HOST``/``DOCKER_TLS_VERIFY``/
    ``DOCKER_CERT_PATH`` say (the URL is then shown, not passed).
    """

    kind: str
    url: str | None
    why: str
    start_service: bool = False
    from_env: bool = False

    def describe(self, source: str) -> str:
        """``podman unix:///run/podman/podman.sock (from option; docker did not answer …)``."""
        where = f" {self.url}" if self.url else ""
        reasons = "; ".join(part for part in (f"from {source}", self.why) if part)
        return f"{self.kind}{where} ({reasons})"


@dataclass(frozen=True, slots=True)
class Probe:
    """What one API endpoint said to ``GET /_ping``."""

    url: str
    answered: bool
    podman: bool = False
    reason: str = ""  # why it did not answer: "no such socket", "connection refused", …


def _http_ping(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str]]:
    sock.settimeout(timeout)
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: engine\r\nUser-Agent: pytest-multiarch\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = head[0].split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {head[0][:60]!r}")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def probe(url: str, *, timeout: float = PROBE_TIMEOUT,
          environ: Mapping[str, str] | None = None) -> Probe:
    """Whether a Docker-compatible API answers at *url*, and whether it is podman's."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    tls = bool(env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_CERT_PATH"))
    if parts.scheme == "ssh" or (parts.scheme == "tcp" and tls):
        return _probe_with_sdk(url, timeout, env)
    try:
        if parts.scheme in ("unix", ""):
            path = parts.path or url
            if not os.path.exists(path):
                return Probe(url, False, reason="no such socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            address: str | tuple[str, int] = path
        elif parts.scheme in ("tcp", "http"):
            sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else
                                 socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            address = (parts.hostname or "127.0.0.1", parts.port or 2375)
        else:
            return Probe(url, False, reason=f"unsupported scheme {parts.scheme}://")
        with sock:
            sock.connect(address)
            status, headers = _http_ping(sock, timeout)
    except FileNotFoundError:
        return Probe(url, False, reason="no such socket")
    except ConnectionRefusedError:
        stale = " (nothing listens: a stale socket file)" if parts.scheme in ("unix", "") else ""
        return Probe(url, False, reason=f"connection refused{stale}")
    except PermissionError:
        return Probe(url, False, reason=f"permission denied for uid {os.getuid()}")
    except TimeoutError:
        return Probe(url, False, reason=f"no answer within {timeout:.0f}s")
    except (OSError, ValueError) as exc:
        return Probe(url, False, reason=str(exc) or type(exc).__name__)
    podman = "libpod-api-version" in headers or headers.get("server", "").startswith("Libpod")
    if status != 200:
        return Probe(url, False, podman, f"answered HTTP {status} to /_ping")
    return Probe(url, True, podman)


def _probe_with_sdk(url: str, timeout: float, env: Mapping[str, str]) -> Probe:
    import docker
    import docker.errors
    import requests.exceptions

    from pytest_multiarch.runners.docker.connection import tls_from_env

    try:
        client = docker.APIClient(base_url=url, timeout=max(1, int(timeout)),
                                  tls=tls_from_env(env) if url.startswith("tcp:") else False)
        try:
            components = client.version().get("Components") or ()
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        text = str(exc).strip().splitlines()
        return Probe(url, False, reason=text[0] if text else type(exc).__name__)
    return Probe(url, True, any("podman" in str(c.get("Name", "")).lower() for c in components))


def podman_sockets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The podman API URLs to try: ``CONTAINER_HOST``, then rootful, then rootless."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    urls = [f"unix://{ROOTFUL_PODMAN_SOCKET}", f"unix://{runtime}/podman/podman.sock"]
    explicit = env.get("CONTAINER_HOST", "").strip()
    return list(dict.fromkeys([explicit, *urls] if explicit else urls))


def detect(
    requested: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT,
    sockets: Sequence[str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> EngineChoice:
    """The engine for ``--engine=`` *requested* (see the module docs).

    Raises :class:`EngineUnavailable` for ``podman`` when ``CONTAINER_HOST`` names a socket that
    does not answer, or when no socket answers and no ``podman`` binary could start a service.
    *sockets* replaces :func:`podman_sockets` (tests).
    """
    env = os.environ if environ is None else environ
    if requested == "rootfs":
        return EngineChoice("rootfs", None, "")
    docker_host = env.get("DOCKER_HOST", "").strip()
    docker_url = docker_host or DEFAULT_DOCKER_HOST
    if requested == "docker":
        return EngineChoice("docker", docker_url, "DOCKER_HOST" if docker_host else "",
                            from_env=True)
    candidates = list(sockets) if sockets is not None else podman_sockets(env)
    explicit = env.get("CONTAINER_HOST", "").strip()
    if requested == "podman":
        return _detect_podman(candidates, explicit, env, timeout, which)
    if requested != "auto":
        raise EngineUnavailable(f"unknown engine {requested!r}; use auto, docker, podman, rootfs")

    docker = probe(docker_url, timeout=timeout, environ=env)
    if docker.answered:
        kind = "podman" if docker.podman else "docker"
        why = "auto: DOCKER_HOST answered" if docker_host else "auto: the Docker engine answered"
        return EngineChoice(kind, docker_url, why, from_env=True)
    tried = [f"docker at {docker_url} ({docker.reason})"]
    for url in candidates:
        found = probe(url, timeout=timeout, environ=env)
        if found.answered:
            return EngineChoice("podman", url, f"docker did not answer at {docker_url}: "
                                f"{docker.reason}")
        tried.append(f"podman at {url} ({found.reason})")
    hint = ("; --engine=podman would start podman's API service" if which("podman") else "")
    return EngineChoice(
        "rootfs", None,
        f"no engine answered: {', '.join(tried)}; runs unpacked layers under proot/chroot "
        f"(no ports){hint}",
    )


def _detect_podman(
    candidates: Sequence[str], explicit: str, env: Mapping[str, str], timeout: float,
    which: Callable[[str], str | None],
) -> EngineChoice:
    tried: list[str] = []
    for url in candidates:
        found = probe(url, timeout=timeout, environ=env)
        if found.answered:
            why = "CONTAINER_HOST" if url == explicit else "its API socket answered"
            return EngineChoice("podman", url, why)
        if url == explicit:
            path = urlsplit(url).path or url
            raise EngineUnavailable(
                f"--engine=podman: CONTAINER_HOST={url} does not answer ({found.reason}). Fix: "
                f"start podman's API service there (podman system service --time=0 {url} &, or "
                "systemctl start podman.socket), point CONTAINER_HOST at the socket that runs "
                f"(rootful {ROOTFUL_PODMAN_SOCKET}, rootless $XDG_RUNTIME_DIR/podman/podman.sock), "
                "or unset it to let pytest-multiarch start a private service"
                + (f"; remove the stale socket file {path}" if "refused" in found.reason else "")
            )
        tried.append(f"{url} ({found.reason})")
    binary = which("podman")
    if binary is not None:
        return EngineChoice(
            "podman", None,
            f"no podman socket answered ({', '.join(tried)}); starting podman system service "
            "--time=0 on a private socket for the session",
            start_service=True,
        )
    stale = [t for t in tried if "refused" in t]
    raise EngineUnavailable(
        f"--engine=podman but no podman API socket answers ({', '.join(tried)}) and there is no "
        "podman binary on PATH to start one. Fix: install podman (apt-get install podman "
        "catatonit), or start its service (podman system service --time=0 "
        f"unix://{ROOTFUL_PODMAN_SOCKET} &) and keep it running"
        + (f"; a socket that refuses connections is stale: {stale[0]}" if stale else "")
        + ", or use --engine=docker / --engine=rootfs"
    )
