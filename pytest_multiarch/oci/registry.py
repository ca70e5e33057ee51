"""A client for the OCI distribution API (go-containerregistry's ``remote``).

What it guarantees, because a cross-architecture check is only as good as the bytes it looked at:

- every manifest and blob is hashed and compared with the digest it was asked for;
- credentials (from ``auth=``, ``~/.docker/config.json``, ``credsStore``/``credHelpers``; see
  :mod:`pytest_multiarch.oci.auth`) are only ever held in objects whose ``repr`` is redacted, and
  never
  put into a message;
- 429/5xx are retried a bounded number of times (honouring a capped ``Retry-After``); other
  failures raise at once, naming the image and what was asked;
- content-addressed data (manifests by digest, configs) is cached on disk by digest, written
  atomically so that xdist workers can share the directory.

The content types every image source shares live in :mod:`pytest_multiarch.oci.content`; they are
re-exported here so ``from pytest_multiarch.oci.registry import Descriptor`` keeps working.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import ipaddress
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import BinaryIO, Self

import requests
from urllib3.exceptions import InsecureRequestWarning

from pytest_multiarch.errors import (
    AuthenticationError,
    DigestMismatchError,
    InvalidReference,
    NotFoundError,
    RegistryError,
    RegistryUnreachable,
)
from pytest_multiarch.oci.auth import (
    Challenge,
    Credentials,
    HeaderAuth,
    basic_auth,
    docker_config_dir,
    load_docker_credentials,
    normalize_host,
    parse_challenges,
)
from pytest_multiarch.oci.content import (
    CHUNK,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DigestCache,
    ImageRef,
    ImageSource,
    Manifest,
    VerifyingReader,
    blob_digest,
    default_cache_dir,
    digest_of,
    verify_digest,
    verifying_file,
)
from pytest_multiarch.oci.reference import Reference, validate_digest

# The client, and (so existing imports keep working) the names now defined in content and auth.
__all__ = [
    "ACCEPT", "CHUNK", "DOCKER_MANIFEST", "DOCKER_MANIFEST_LIST", "INDEX_TYPES", "MANIFEST_TYPES",
    "MAX_MANIFEST_BYTES", "OCI_INDEX", "OCI_MANIFEST", "Challenge", "Credentials", "Descriptor",
    "DigestCache", "ImageRef", "ImageSource", "Manifest", "RegistryClient", "RequestStats",
    "VerifyingReader", "blob_digest", "default_cache_dir", "digest_of", "docker_config_dir",
    "is_loopback", "load_docker_credentials", "parse_challenges", "verify_digest", "verifying_file",
]

log = logging.getLogger(__name__)

# Without the OCI index type ghcr/GitLab answer 404; without Docker v2, Docker Hub sends schema 1.
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
_USER_AGENT = "pytest-multiarch"




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


_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RegistryClient:
    """OCI distribution client (see the module docstring); implements :class:`ImageSource`.

    *auth* maps registry hosts to ``(username, password)``; without an entry, the Docker config
    (*docker_config* dir, else ``$DOCKER_CONFIG``, else ``~/.docker``) is asked, lazily, only when
    a registry challenges.  Plain HTTP is tried only for loopback hosts and *insecure_registries*
    (host[:port] or CIDR), whose TLS certificates are then not verified either; other hosts are
    verified against *ca_bundle* (or the system store).  ``cache=False`` keeps nothing on disk.
    """

    def __init__(
        self,
        *,
        auth: Mapping[str, tuple[str, str]] | None = None,
        docker_config: str | os.PathLike[str] | None = None,
        insecure_registries: Iterable[str] = (),
        ca_bundle: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        max_retry_after: float = 10.0,
        max_blob_bytes: int = 64 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        self._explicit_auth = {
            normalize_host(host): Credentials(user, secret, "auth= given to RegistryClient")
            for host, (user, secret) in (auth or {}).items()
        }
        self._docker_config = docker_config
        self.insecure_registries = tuple(insecure_registries)
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self.cache = DigestCache(cache_dir) if cache else None
        self.timeout = (connect_timeout, timeout)
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.max_blob_bytes = max_blob_bytes
        self.stats = RequestStats()
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = _USER_AGENT
        self._schemes: dict[str, str] = {}
        self._auth: dict[tuple[str, str], HeaderAuth] = {}
        self._found_credentials: dict[str, Credentials | None] = {}

    def __repr__(self) -> str:
        return (
            f"RegistryClient(insecure_registries={list(self.insecure_registries)!r}, "
            f"ca_bundle={self.ca_bundle!r}, cache={self.cache!r}, "
            f"auth_hosts={sorted(self._explicit_auth)!r})"
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------------

    def head_manifest(self, ref: Reference) -> Descriptor:
        """``HEAD`` the manifest: its media type, digest (``Docker-Content-Digest``) and size."""
        what = self._what(ref, "manifest")
        with self._request("HEAD", ref, f"manifests/{ref.api_reference}", what=what,
                           kind="manifest", accept=ACCEPT) as resp:
            return self._head_descriptor(resp, ref, what=what)

    def get_manifest(self, ref: Reference) -> Manifest:
        """The manifest or index for *ref*, verified; by digest it may come from the cache."""
        what = self._what(ref, "manifest")
        digest = ref.digest
        if digest is None and self.cache is not None:
            # A HEAD is free against Docker Hub's rate limit and, when the digest is cached,
            # saves the GET; a registry that mishandles HEAD just gets the GET.
            with self._request("HEAD", ref, f"manifests/{ref.api_reference}", what=what,
                               kind="manifest", accept=ACCEPT, tolerate=(400, 404, 405)) as resp:
                if resp.status_code < 400 and resp.headers.get("Docker-Content-Digest"):
                    digest = self._head_descriptor(resp, ref, what=what).digest
        if digest is not None and self.cache is not None:
            cached = self.cache.get(digest)
            if cached is not None:
                self.stats.cache_hits += 1
                return Manifest.parse(cached, digest, what=what)
        # Once the digest is known, GET by digest: the tag cannot move in between.
        with self._request("GET", ref, f"manifests/{digest or ref.api_reference}", what=what,
                           kind="manifest", accept=ACCEPT) as resp:
            raw = _read_limited(resp, MAX_MANIFEST_BYTES, what=what)
            content_type = resp.headers.get("Content-Type", "")
            served = resp.headers.get("Docker-Content-Digest")
        if digest is None and served:
            digest = self._checked_header_digest(served, what=what)
        if digest is not None:
            verify_digest(raw, digest, what=what)
        else:
            digest = digest_of(raw)
        manifest = Manifest.parse(raw, digest, content_type=content_type, what=what)
        if self.cache is not None:
            self.cache.put(digest, raw)
        return manifest

    def get_referrers(self, ref: Reference, digest: str) -> tuple[bytes, str] | None:
        """The OCI 1.1 referrers API's answer for *digest* (raw bytes, Content-Type), or
        ``None`` when the registry has no such API (404/405/400: distribution 2.8 answers 404);
        callers then try the ``sha256-<hex>`` tag fallback."""
        what = self._what(ref, f"referrers of {digest}")
        path = f"referrers/{validate_digest(digest)}"
        with self._request("GET", ref, path, what=what, kind="manifest", accept=OCI_INDEX,
                           tolerate=(400, 404, 405)) as resp:
            if resp.status_code >= 400:
                return None
            return (_read_limited(resp, MAX_MANIFEST_BYTES, what=what),
                    resp.headers.get("Content-Type", ""))

    def _head_descriptor(self, resp: requests.Response, ref: Reference, *, what: str
                         ) -> Descriptor:
        served = resp.headers.get("Docker-Content-Digest")
        if served is None and ref.digest is None:
            raise RegistryError(f"{what}: HEAD gave no Docker-Content-Digest; use GET")
        return Descriptor(
            media_type=resp.headers.get("Content-Type", "").split(";")[0],
            digest=self._checked_header_digest(served, what=what) if served else str(ref.digest),
            size=int(resp.headers.get("Content-Length") or 0),
        )

    @staticmethod
    def _checked_header_digest(served: str, *, what: str) -> str:
        try:
            return validate_digest(served.strip())
        except InvalidReference:
            raise RegistryError(
                f"{what}: the registry sent a malformed Docker-Content-Digest header"
            ) from None

    def get_blob(self, ref: Reference, blob: str | Descriptor) -> bytes:
        """A small blob (a config), verified and cached; for layers use :meth:`open_blob`."""
        digest, size = blob_digest(blob)
        what = self._what(ref, f"blob {digest}")
        if self.cache is not None and (cached := self.cache.get(digest)) is not None:
            self.stats.cache_hits += 1
            return cached
        if size is not None and size > self.max_blob_bytes:
            raise RegistryError(f"{what}: {size} bytes is too large to hold; use open_blob()")
        with self._request("GET", ref, f"blobs/{digest}", what=what, kind="blob") as resp:
            data = _read_limited(resp, self.max_blob_bytes, what=what)
        if size is not None and len(data) != size:
            raise DigestMismatchError(f"{what}: got {len(data)} bytes, descriptor says {size}")
        verify_digest(data, digest, what=what)
        if self.cache is not None:
            self.cache.put(digest, data)
        return data

    @contextlib.contextmanager
    def open_blob(self, ref: Reference, blob: str | Descriptor) -> Iterator[BinaryIO]:
        """Stream a blob (a layer); reading to EOF verifies it (:class:`DigestMismatchError`)."""
        digest, size = blob_digest(blob)
        what = self._what(ref, f"blob {digest}")
        if self.cache is not None and self.cache.path(digest).is_file():
            self.stats.cache_hits += 1
            with verifying_file(self.cache.path(digest), digest, size=size, what=what) as reader:
                yield reader
            return
        with self._request("GET", ref, f"blobs/{digest}", what=what, kind="blob",
                           stream=True) as resp:
            raw = VerifyingReader(_transfer(resp, what=what), digest, size=size, what=what)
            with io.BufferedReader(raw, CHUNK) as reader:
                yield reader

    # -- transport -----------------------------------------------------------------------------

    @staticmethod
    def _what(ref: Reference, asked: str) -> str:
        if asked == "manifest":
            asked = f"manifest {ref.api_reference}"
        # The digest is already in *asked*; show the image as the user named it.
        image = f"{ref.name}:{ref.tag}" if ref.tag else ref.name
        return f"{asked} of {image}"

    def _request(
        self, method: str, ref: Reference, path: str, *, what: str, kind: str,
        accept: str | None = None, stream: bool = False, tolerate: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send with auth, scheme fallback and retries; a final status >= 400 raises
        unless it is in *tolerate*."""
        host = ref.api_host
        headers = {"Accept": accept} if accept else {}
        started = time.monotonic()
        authenticated = False
        attempt = 0
        while True:
            resp = self._send(method, host, f"/v2/{ref.repository}/{path}", what=what, kind=kind,
                              headers=headers, auth=self._auth_for(host, ref.repository),
                              stream=stream or method == "GET")
            status = resp.status_code
            if status == 401 and not authenticated:
                authenticated = True
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._authenticate(ref, challenge, what=what)
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
                                             authenticated=authenticated)
                finally:
                    resp.close()
            return resp

    def _send(
        self, method: str, host: str, path: str, *, what: str, kind: str,
        headers: Mapping[str, str], auth: HeaderAuth | None, stream: bool,
    ) -> requests.Response:
        plain_ok = self._plain_http_allowed(host)
        verify: bool | str = False if self._is_insecure(host) else (self.ca_bundle or True)
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
                        stream=stream, timeout=self.timeout, verify=verify, allow_redirects=True,
                    )
            except requests.exceptions.SSLError as exc:
                if _is_certificate_error(exc) or scheme == schemes[-1]:
                    raise RegistryUnreachable(
                        f"{what}: TLS with {host} failed ({_reason(exc)}); trust its CA "
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
                if scheme != schemes[-1] and "refused" not in str(exc).lower():
                    self.stats.tls_fallbacks += 1
                    continue
                raise RegistryUnreachable(
                    f"{what}: cannot connect to {host} ({_reason(exc)}); is the registry running "
                    "and is the address right?"
                ) from None
            except requests.RequestException as exc:
                raise RegistryError(f"{what}: request to {host} failed ({_reason(exc)})") from None
            self._schemes[host] = scheme
            self._tally(kind)
            log.debug("%s %s://%s%s -> %s", method, scheme, host, path, resp.status_code)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _tally(self, kind: str) -> None:
        self.stats.requests += 1
        if kind == "manifest":
            self.stats.manifest_requests += 1
        elif kind == "blob":
            self.stats.blob_requests += 1
        elif kind == "token":
            self.stats.token_requests += 1

    def _plain_http_allowed(self, host: str) -> bool:
        return is_loopback(host) or self._is_insecure(host)

    def _is_insecure(self, host: str) -> bool:
        name = _strip_port(host)
        for entry in self.insecure_registries:
            if entry in (host, name):
                return True
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                    return True
        return False

    def _retry_delay(self, resp: requests.Response, attempt: int) -> float:
        header = resp.headers.get("Retry-After", "").strip()
        delay: float | None = None
        if header.isdigit():
            delay = float(header)
        elif header:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(header)
                delay = when.timestamp() - time.time()
        if delay is None:
            delay = 0.5 * 2**attempt
        return max(0.0, min(delay, self.max_retry_after))

    def _status_error(
        self, resp: requests.Response, ref: Reference, *, what: str, attempts: int,
        elapsed: float, authenticated: bool,
    ) -> RegistryError:
        status = resp.status_code
        detail = _registry_error_detail(resp)
        host = ref.api_host
        if status == 404:
            return NotFoundError(
                f"{what}: not found (HTTP 404{detail}); check the repository and tag exist on "
                f"{host} (skopeo list-tags docker://{ref.name})"
            )
        if status in (401, 403):
            creds = self._credentials(ref.registry, required=False) if authenticated else None
            had = f"the credentials from {creds.source}" if creds else "anonymous access"
            verb = "refused" if status == 401 else "denied"
            return AuthenticationError(
                f"{what}: {host} {verb} {had} (HTTP {status}{detail}); log in with "
                f"`docker login {ref.registry}` or pass credentials for it"
            )
        if status in _RETRY_STATUS:
            reason = "too many requests" if status == 429 else "server error"
            return RegistryError(
                f"{what}: {host} answered HTTP {status} ({reason}{detail}) on all {attempts} "
                f"attempts over {elapsed:.1f} s; try again later"
            )
        return RegistryError(f"{what}: {host} answered HTTP {status}{detail}")

    # -- authentication ------------------------------------------------------------------------

    def _auth_for(self, host: str, repository: str) -> HeaderAuth | None:
        token = self._auth.get((host, repository))
        if token is not None and token.expires > time.monotonic():
            return token
        return self._auth.get((host, ""))

    def _credentials(self, registry: str, *, required: bool) -> Credentials | None:
        """Explicit ``auth=`` first, then the Docker config; looked up once per registry."""
        host = normalize_host(registry)
        if host in self._explicit_auth:
            return self._explicit_auth[host]
        if host not in self._found_credentials:
            try:
                self._found_credentials[host] = load_docker_credentials(
                    registry, self._docker_config
                )
            except RegistryError as exc:
                if required:
                    raise
                log.warning("ignoring credentials for %s: %s", registry, exc)
                return None
        return self._found_credentials[host]

    def _authenticate(self, ref: Reference, header: str, *, what: str) -> None:
        host = ref.api_host
        challenges = {c.scheme: c for c in parse_challenges(header)}
        if "bearer" in challenges:
            self._auth[(host, ref.repository)] = self._fetch_token(
                ref, challenges["bearer"], what=what
            )
        elif "basic" in challenges:
            creds = self._credentials(ref.registry, required=True)
            if creds is None:
                raise AuthenticationError(
                    f"{what}: {host} requires credentials (Basic) and none are configured for "
                    f"{ref.registry}; run `docker login {ref.registry}` or pass auth="
                )
            self._auth[(host, "")] = basic_auth(creds)
        else:
            raise AuthenticationError(
                f"{what}: {host} answered HTTP 401 without a usable challenge "
                f"(WWW-Authenticate: {', '.join(challenges) or 'none'})"
            )

    def _fetch_token(self, ref: Reference, challenge: Challenge, *, what: str) -> HeaderAuth:
        realm = challenge.params.get("realm", "")
        realm_host = realm.split("://", 1)[-1].split("/", 1)[0]
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(f"{what}: bearer challenge has no usable realm ({realm!r})")
        if realm.startswith("http://") and not self._plain_http_allowed(realm_host):
            raise AuthenticationError(
                f"{what}: token realm {realm} is plain HTTP on a non-loopback host; refusing to "
                "send credentials there (list it as an insecure registry if that is intended)"
            )
        scope = challenge.params.get("scope") or f"repository:{ref.repository}:pull"
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        creds = self._credentials(ref.registry, required=False)
        verify: bool | str = False if self._is_insecure(realm_host) else (self.ca_bundle or True)
        try:
            if creds is not None and creds.is_identity_token:
                resp = self._session.post(
                    realm, data={**params, "grant_type": "refresh_token",
                                 "refresh_token": creds.secret, "client_id": _USER_AGENT},
                    timeout=self.timeout, verify=verify,
                )
            else:
                resp = self._session.get(
                    realm, params=params, auth=basic_auth(creds) if creds else None,
                    timeout=self.timeout, verify=verify,
                )
        except requests.RequestException as exc:
            raise RegistryUnreachable(
                f"{what}: token endpoint {realm} unreachable ({_reason(exc)})"
            ) from None
        self._tally("token")
        had = f"the credentials from {creds.source}" if creds else "an anonymous request"
        with resp:
            if resp.status_code in (401, 403):
                raise AuthenticationError(
                    f"{what}: token endpoint {realm} refused {had} (HTTP {resp.status_code}); "
                    f"log in with `docker login {ref.registry}` or pass credentials for it"
                )
            if resp.status_code >= 400:
                raise RegistryError(
                    f"{what}: token endpoint {realm} answered HTTP {resp.status_code}"
                )
            try:
                body = resp.json()
                token = body.get("token") or body.get("access_token")
                expires_in = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                raise AuthenticationError(f"{what}: token endpoint {realm} sent no JSON") from None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(
                f"{what}: token endpoint {realm} answered without 'token' or 'access_token'"
            )
        # Renew a little early so a token cannot expire between check and use.
        return HeaderAuth(f"Bearer {token}", time.monotonic() + max(expires_in - 10, 1))


def _read_limited(resp: requests.Response, limit: int, *, what: str) -> bytes:
    buf = bytearray()
    try:
        for chunk in resp.iter_content(CHUNK):
            buf += chunk
            if len(buf) > limit:
                raise RegistryError(f"{what}: larger than {limit} bytes; refusing to hold it")
    except requests.RequestException as exc:
        raise RegistryUnreachable(f"{what}: transfer broke off ({_reason(exc)})") from None
    return bytes(buf)


def _transfer(resp: requests.Response, *, what: str) -> Iterator[bytes]:
    """*resp*'s body in chunks; a broken transfer raises :class:`RegistryUnreachable`."""
    try:
        yield from resp.iter_content(CHUNK)
    except requests.RequestException as exc:
        raise RegistryUnreachable(f"{what}: transfer broke off ({exc})") from None


def _registry_error_detail(resp: requests.Response) -> str:
    """`` CODE: message`` from a distribution error body, if it has one."""
    try:
        errors = json.loads(resp.content[:65536]).get("errors")
        first = errors[0]
        return f" {first.get('code', '')}: {str(first.get('message', ''))[:200]}"
    except (ValueError, AttributeError, TypeError, IndexError, KeyError,
            requests.RequestException):
        return ""


def _is_certificate_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "certificate" in text or "hostname" in text


def _reason(exc: Exception) -> str:
    """A short cause without URLs' query strings or headers: ``[Errno 111] Connection refused``."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text) or re.search(
        r"(certificate verify failed[^'\")]*|wrong version number|timed out|read timeout)",
        text, re.IGNORECASE,
    )
    return match.group(0).strip() if match else type(exc).__name__

