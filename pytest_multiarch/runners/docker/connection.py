"""Reaching a Docker API engine: TLS by Docker's conventions, URLs without passwords for
messages, and the error for an engine that does not answer (local, or a named remote host).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import docker

from pytest_multiarch.errors import EngineUnavailable, MultiarchError, RemoteHostUnavailable
from pytest_multiarch.platforms import Platform

__all__ = ["display_url", "tls_from_env", "unavailable"]


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


#: The old private name, still used by callers of this package.
_display = display_url


def unavailable(
    exc: BaseException, elapsed: float, *, target: str, url: str | None,
    named_arch: Platform | None, remote_error: str | None = None,
) -> MultiarchError:
    """The error for an engine at *target* that did not answer within *elapsed* seconds."""
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
