"""Which registry hosts may be spoken to in plain HTTP or without verifying TLS, and what a
failed connection to one says (a short cause, never a URL's query string or a header).

Plain HTTP is allowed for loopback hosts and the *insecure registries* (``host[:port]`` or a
CIDR), whose certificates are not verified either; every other host is verified against the CA
bundle (or the system store).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass

__all__ = ["HostPolicy", "is_certificate_error", "is_loopback", "reason"]


def is_loopback(host: str) -> bool:
    """Whether *host* (``name[:port]`` or ``[v6]:port``) is ``localhost`` or a loopback address."""
    name = _strip_port(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The insecure registries and the CA bundle, asked per host."""

    insecure_registries: tuple[str, ...] = ()
    ca_bundle: str | None = None

    def plain_http_allowed(self, host: str) -> bool:
        return is_loopback(host) or self.is_insecure(host)

    def verify(self, host: str) -> bool | str:
        """requests' ``verify=`` for *host*."""
        return False if self.is_insecure(host) else (self.ca_bundle or True)

    def is_insecure(self, host: str) -> bool:
        name = _strip_port(host)
        for entry in self.insecure_registries:
            if entry in (host, name):
                return True
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                    return True
        return False


def is_certificate_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "certificate" in text or "hostname" in text


def reason(exc: Exception) -> str:
    """A short cause without URLs' query strings or headers: ``[Errno 111] Connection refused``."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text) or re.search(
        r"(certificate verify failed[^'\")]*|wrong version number|timed out|read timeout)",
        text, re.IGNORECASE,
    )
    return match.group(0).strip() if match else type(exc).__name__
