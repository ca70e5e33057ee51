"""HTTP to OCI registries (go-containerregistry's ``remote/transport``): schemes and TLS, auth
challenges and tokens scoped per repository, retries, deadlines and caps on what is read.  The
request loop is here; which hosts get plain HTTP is :mod:`.hosts`, answering a 401 (Basic, bearer
tokens) is :mod:`.tokens`.

Bounds, because a gate talks to registries it does not control:

- every exchange (connect, headers, body) has an overall **deadline**, enforced by a watchdog that
  shuts the socket down (:mod:`.deadline`): a per-read timeout alone lets a server that sends
  one byte every two seconds hold a gate for ever.  Streamed blobs get
  ``deadline + size / min_rate``;
- bodies read for a message (error details) are capped at 4 KiB, token responses at 64 KiB
  (:mod:`.bodies`), JSON documents by their caller (manifests: 4 MiB);
- 429/5xx are retried ``max_retries`` times with a capped ``Retry-After``; nothing else is.

Credentials come from a lookup function (:mod:`pytest_multiarch.oci.auth`), are held as
:class:`~pytest_multiarch._secret.Secret` and never put into a message or a local of a frame that
can raise into a test report.  ``Authorization`` is dropped on a redirect to another host
(requests' ``rebuild_auth``; the auth object is not re-applied).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields

import requests
from urllib3.exceptions import InsecureRequestWarning

from pytest_multiarch.errors import (
    AuthenticationError,
    NotFoundError,
    RegistryError,
    RegistryUnreachable,
)
from pytest_multiarch.oci.auth import HeaderAuth
from pytest_multiarch.oci.bodies import error_detail
from pytest_multiarch.oci.content import CHUNK
from pytest_multiarch.oci.deadline import Deadline, DeadlineAdapter
from pytest_multiarch.oci.hosts import HostPolicy, is_certificate_error, reason
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.tokens import USER_AGENT, Authenticator, CredentialLookup

__all__ = ["RequestStats", "Transport"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class RequestStats:
    """HTTP requests that got an answer, by kind (retries included), and what the cache saved.

    ``tls_fallbacks`` counts TLS handshakes a plain-HTTP registry refused before we switched.
    """

    requests: int = 0
    manifest_requests: int = 0
    blob_requests: int = 0
    token_requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    tls_fallbacks: int = 0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def tally(self, kind: str) -> None:
        """One more answered request of *kind* (``manifest``, ``blob``, ``token`` or other)."""
        self.requests += 1
        if kind == "manifest":
            self.manifest_requests += 1
        elif kind == "blob":
            self.blob_requests += 1
        elif kind == "token":
            self.token_requests += 1


# -- the transport --------------------------------------------------------------------------------


class Transport:
    """Authenticated, bounded HTTP to registries (see the module docstring).

    *credentials(registry, required)* returns what to log in with, or ``None``.
    """

    def __init__(
        self,
        *,
        credentials: CredentialLookup,
        insecure_registries: Iterable[str] = (),
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        deadline: float = 120.0,
        min_rate: float = 1 << 20,
        max_retries: int = 3,
        max_retry_after: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.hosts = HostPolicy(tuple(insecure_registries), ca_bundle)
        self.timeout = (connect_timeout, timeout)
        self.deadline = deadline
        self.min_rate = min_rate
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.stats = RequestStats()
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, DeadlineAdapter())
        self._schemes: dict[str, str] = {}
        self.auth = Authenticator(
            credentials=credentials, session=self._session, hosts=self.hosts,
            timeout=self.timeout, deadline=deadline, on_token=lambda: self.stats.tally("token"),
        )
        # The deadline of each open response, for reads of its body (which may happen after
        # another exchange in the same thread began: nested layers, a token fetch).
        self._deadlines: weakref.WeakKeyDictionary[requests.Response, Deadline] = (
            weakref.WeakKeyDictionary())

    def close(self) -> None:
        self._session.close()

    def deadline_for(self, size: int | None) -> float:
        """The overall deadline of one exchange that reads *size* bytes (``None``: small)."""
        return self.deadline + (size or 0) / self.min_rate

    # -- requests ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def request(
        self, method: str, ref: Reference, path: str, *, what: str, kind: str,
        accept: str | None = None, tolerate: tuple[int, ...] = (), size: int | None = None,
    ) -> Iterator[requests.Response]:
        """The (streamed) response to *method* on ``/v2/<repository>/<path>``, with auth, scheme
        fallback and retries; a final status >= 400 raises unless it is in *tolerate*.  Reading
        its body must happen inside the ``with`` block: the deadline covers it."""
        host = ref.api_host
        headers = {"Accept": accept} if accept else {}
        started = time.monotonic()
        authenticated = False
        attempt = 0
        while True:
            with Deadline(self.deadline_for(size)) as deadline:
                resp = self._send(method, host, f"/v2/{ref.repository}/{path}", what=what,
                                  kind=kind, headers=headers, deadline=deadline,
                                  auth=self.auth.auth_for(host, ref.repository))
                status = resp.status_code
                if status == 401 and not authenticated:
                    authenticated = True
                    challenge = resp.headers.get("WWW-Authenticate", "")
                    resp.close()
                    self.auth.authenticate(ref, challenge, what=what)
                    continue
                if status in _RETRY_STATUS and attempt < self.max_retries:
                    delay = self._retry_delay(resp, attempt)
                    log.info("%s: HTTP %s, retrying in %.1f s", what, status, delay)
                    resp.close()
                    attempt += 1
                    self.stats.retries += 1
                    time.sleep(delay)
                    continue
                if status >= 400 and status not in tolerate:
                    try:
                        raise self._status_error(resp, ref, what=what, attempts=attempt + 1,
                                                 elapsed=time.monotonic() - started,
                                                 authenticated=authenticated,
                                                 deadline=deadline)
                    finally:
                        resp.close()
                self._deadlines[resp] = deadline
                with resp:
                    yield resp
                return

    def _send(
        self, method: str, host: str, path: str, *, what: str, kind: str,
        headers: Mapping[str, str], auth: HeaderAuth | None, deadline: Deadline,
    ) -> requests.Response:
        plain_ok = self.hosts.plain_http_allowed(host)
        verify = self.hosts.verify(host)
        schemes = [self._schemes[host]] if host in self._schemes else (
            ["https", "http"] if plain_ok else ["https"]
        )
        for scheme in schemes:
            try:
                with warnings.catch_warnings():
                    if verify is False:  # asked for by listing the host as insecure: no nagging
                        warnings.simplefilter("ignore", InsecureRequestWarning)
                    resp = self._session.request(
                        method, f"{scheme}://{host}{path}", headers=headers, auth=auth,
                        stream=True, timeout=self.timeout, verify=verify, allow_redirects=True,
                    )
            except requests.exceptions.SSLError as exc:
                if deadline.expired:
                    raise deadline.overdue(what, host) from None
                if is_certificate_error(exc) or scheme == schemes[-1]:
                    raise RegistryUnreachable(
                        f"{what}: TLS with {host} failed ({reason(exc)}); trust its CA "
                        "(ca_bundle=, or REQUESTS_CA_BUNDLE) or list it as an insecure registry"
                    ) from None
                self.stats.tls_fallbacks += 1
                continue  # it speaks plain HTTP: fall back, as Docker does for such hosts
            except requests.exceptions.Timeout as exc:
                limit = self.timeout[0 if isinstance(exc, requests.ConnectTimeout) else 1]
                raise RegistryUnreachable(
                    f"{what}: {host} did not answer within {limit:g} s"
                ) from None
            except requests.exceptions.ConnectionError as exc:
                if deadline.expired:
                    raise deadline.overdue(what, host) from None
                if scheme != schemes[-1] and "refused" not in str(exc).lower():
                    self.stats.tls_fallbacks += 1
                    continue
                raise RegistryUnreachable(
                    f"{what}: cannot connect to {host} ({reason(exc)}); is the registry running "
                    "and is the address right?"
                ) from None
            except requests.RequestException as exc:
                if deadline.expired:
                    raise deadline.overdue(what, host) from None
                raise RegistryError(f"{what}: request to {host} failed ({reason(exc)})") from None
            self._schemes[host] = scheme
            self.stats.tally(kind)
            log.debug("%s %s://%s%s -> %s", method, scheme, host, path, resp.status_code)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, resp: requests.Response, limit: int, *, what: str) -> bytes:
        """*resp*'s body, at most *limit* bytes (more raises); inside :meth:`request`'s block."""
        buf = bytearray()
        for chunk in self.chunks(resp, what=what):
            buf += chunk
            if len(buf) > limit:
                raise RegistryError(f"{what}: larger than {limit} bytes; refusing to hold it")
        return bytes(buf)

    def chunks(self, resp: requests.Response, *, what: str) -> Iterator[bytes]:
        """*resp*'s body in chunks; a broken or overdue transfer raises RegistryUnreachable."""
        deadline = self._deadlines.get(resp)
        host = resp.url.split("://", 1)[-1].split("/", 1)[0]
        try:
            yield from resp.iter_content(CHUNK)
        except requests.RequestException as exc:
            if deadline is not None and deadline.expired:
                raise deadline.overdue(what, host) from None
            raise RegistryUnreachable(f"{what}: transfer broke off ({reason(exc)})") from None
        # A body without Content-Length ends at EOF, which the watchdog's shutdown also makes.
        if deadline is not None and deadline.expired:
            raise deadline.overdue(what, host)

    def _retry_delay(self, resp: requests.Response, attempt: int) -> float:
        header = resp.headers.get("Retry-After", "").strip()
        delay: float | None = None
        if header.isascii() and header.isdigit():
            delay = float(header)
        elif header:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                when = email.utils.parsedate_to_datetime(header)
                delay = when.timestamp() - time.time()
        if delay is None:
            delay = 0.5 * 2**attempt
        return max(0.0, min(delay, self.max_retry_after))

    def _status_error(
        self, resp: requests.Response, ref: Reference, *, what: str, attempts: int,
        elapsed: float, authenticated: bool, deadline: Deadline,
    ) -> RegistryError:
        status = resp.status_code
        detail = error_detail(resp, deadline)
        host = ref.api_host
        if status == 404:
            return NotFoundError(
                f"{what}: not found (HTTP 404{detail}); check the repository and tag exist on "
                f"{host} (skopeo list-tags docker://{ref.name})"
            )
        if status in (401, 403):
            creds = self.auth.lookup(ref.registry, False) if authenticated else None
            had = f"the credentials from {creds.source}" if creds else "anonymous access"
            verb = "refused" if status == 401 else "denied"
            return AuthenticationError(
                f"{what}: {host} {verb} {had} (HTTP {status}{detail}); log in with "
                f"`docker login {ref.registry}` or pass credentials for it"
            )
        if status in _RETRY_STATUS:
            cause = "too many requests" if status == 429 else "server error"
            return RegistryError(
                f"{what}: {host} answered HTTP {status} ({cause}{detail}) on all {attempts} "
                f"attempts over {elapsed:.1f} s; try again later"
            )
        return RegistryError(f"{what}: {host} answered HTTP {status}{detail}")
