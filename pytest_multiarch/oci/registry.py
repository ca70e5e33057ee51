"""A client for the OCI distribution API (go-containerregistry's ``remote``): manifests and blobs
on top of :mod:`pytest_multiarch.oci.transport` (HTTP, auth, retries, deadlines, caps).

What it guarantees, because a cross-architecture check is only as good as the bytes it looked at:

- every manifest and blob is hashed and compared with the digest it was asked for;
- what it holds in memory is bounded: manifests 4 MiB, small blobs (configs) *max_blob_bytes*;
  layers are streamed;
- credentials (from ``auth=``, the Docker config, the containers auth file; see
  :mod:`pytest_multiarch.oci.auth`) are only ever held as masked secrets, never put into a message;
- content-addressed data (manifests by digest, configs) is cached on disk by digest, written
  atomically so that xdist workers can share the directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO, Self

import requests

from pytest_multiarch.errors import (
    DigestMismatchError,
    InvalidReference,
    RegistryError,
)
from pytest_multiarch.oci.auth import Credentials, load_credentials, normalize_host
from pytest_multiarch.oci.content import (
    CHUNK,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DigestCache,
    Manifest,
    VerifyingReader,
    blob_digest,
    digest_of,
    verify_digest,
    verifying_file,
)
from pytest_multiarch.oci.reference import Reference, validate_digest
from pytest_multiarch.oci.transport import RequestStats, Transport

__all__ = ["ACCEPT", "MAX_CONFIG_BYTES", "RegistryClient"]

log = logging.getLogger(__name__)

# Without the OCI index type ghcr/GitLab answer 404; without Docker v2, Docker Hub sends schema 1.
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
# Image configs are JSON documents too: the largest real ones (long histories) are a few hundred
# KiB, so 16 MiB bounds a hostile one without refusing anything real.
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class RegistryClient:
    """OCI distribution client (see the module docstring); implements :class:`ImageSource`.

    *auth* maps registry hosts to ``(username, password)``; without an entry, the Docker config
    (*docker_config* dir, else ``$DOCKER_CONFIG``, else ``~/.docker``) and then the containers
    auth file are asked, lazily, only when a registry challenges.  Plain HTTP is tried only for
    loopback hosts and *insecure_registries* (host[:port] or CIDR), whose TLS certificates are
    then not verified either; other hosts are verified against *ca_bundle* (or the system
    store).  Each exchange ends within *deadline* seconds (streamed blobs: plus their size at
    *min_rate* bytes/s).  ``cache=False`` keeps nothing on disk.
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
        deadline: float = 120.0,
        min_rate: float = 1 << 20,
        max_retries: int = 3,
        max_retry_after: float = 10.0,
        max_blob_bytes: int = MAX_CONFIG_BYTES,
        session: requests.Session | None = None,
    ) -> None:
        self._explicit_auth = {
            normalize_host(host): Credentials(user, secret, "auth= given to RegistryClient")
            for host, (user, secret) in (auth or {}).items()
        }
        self._docker_config = docker_config
        self.cache = DigestCache(cache_dir) if cache else None
        self.max_blob_bytes = max_blob_bytes
        self._found_credentials: dict[str, Credentials | None] = {}
        self.transport = Transport(
            credentials=self._credentials, insecure_registries=insecure_registries,
            ca_bundle=str(ca_bundle) if ca_bundle is not None else None, timeout=timeout,
            connect_timeout=connect_timeout, deadline=deadline, min_rate=min_rate,
            max_retries=max_retries, max_retry_after=max_retry_after, session=session,
        )

    @property
    def stats(self) -> RequestStats:
        return self.transport.stats

    @property
    def insecure_registries(self) -> tuple[str, ...]:
        return self.transport.hosts.insecure_registries

    def __repr__(self) -> str:
        return (
            f"RegistryClient(insecure_registries={list(self.insecure_registries)!r}, "
            f"ca_bundle={self.transport.hosts.ca_bundle!r}, cache={self.cache!r}, "
            f"auth_hosts={sorted(self._explicit_auth)!r})"
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------------

    def head_manifest(self, ref: Reference) -> Descriptor:
        """``HEAD`` the manifest: its media type, digest (``Docker-Content-Digest``) and size."""
        what = self._what(ref, "manifest")
        with self.transport.request("HEAD", ref, f"manifests/{ref.api_reference}", what=what,
                                    kind="manifest", accept=ACCEPT) as resp:
            return self._head_descriptor(resp, ref, what=what)

    def get_manifest(self, ref: Reference) -> Manifest:
        """The manifest or index for *ref*, verified; by digest it may come from the cache."""
        what = self._what(ref, "manifest")
        digest = ref.digest
        if digest is None and self.cache is not None:
            # A HEAD is free against Docker Hub's rate limit and, when the digest is cached,
            # saves the GET; a registry that mishandles HEAD just gets the GET.
            with self.transport.request("HEAD", ref, f"manifests/{ref.api_reference}",
                                        what=what, kind="manifest", accept=ACCEPT,
                                        tolerate=(400, 404, 405)) as resp:
                if resp.status_code < 400 and resp.headers.get("Docker-Content-Digest"):
                    digest = self._head_descriptor(resp, ref, what=what).digest
        if digest is not None and self.cache is not None:
            cached = self.cache.get(digest)
            if cached is not None:
                self.stats.cache_hits += 1
                return Manifest.parse(cached, digest, what=what)
        # Once the digest is known, GET by digest: the tag cannot move in between.
        with self.transport.request("GET", ref, f"manifests/{digest or ref.api_reference}",
                                    what=what, kind="manifest", accept=ACCEPT) as resp:
            raw = self.transport.read(resp, MAX_MANIFEST_BYTES, what=what)
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
        with self.transport.request("GET", ref, path, what=what, kind="manifest",
                                    accept=OCI_INDEX, tolerate=(400, 404, 405)) as resp:
            if resp.status_code >= 400:
                return None
            return (self.transport.read(resp, MAX_MANIFEST_BYTES, what=what),
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
        with self.transport.request("GET", ref, f"blobs/{digest}", what=what, kind="blob",
                                    size=size) as resp:
            data = self.transport.read(resp, self.max_blob_bytes, what=what)
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
        with self.transport.request("GET", ref, f"blobs/{digest}", what=what, kind="blob",
                                    size=size) as resp:
            raw = VerifyingReader(self.transport.chunks(resp, what=what), digest, size=size,
                                  what=what)
            with io.BufferedReader(raw, CHUNK) as reader:
                yield reader

    # -- naming and credentials ----------------------------------------------------------------

    @staticmethod
    def _what(ref: Reference, asked: str) -> str:
        if asked == "manifest":
            asked = f"manifest {ref.api_reference}"
        # The digest is already in *asked*; show the image as the user named it.
        image = f"{ref.name}:{ref.tag}" if ref.tag else ref.name
        return f"{asked} of {image}"

    def _credentials(self, registry: str, required: bool) -> Credentials | None:
        """Explicit ``auth=`` first, then the Docker config and containers auth file; looked up
        once per registry."""
        host = normalize_host(registry)
        if host in self._explicit_auth:
            return self._explicit_auth[host]
        if host not in self._found_credentials:
            try:
                self._found_credentials[host] = load_credentials(registry, self._docker_config)
            except RegistryError as exc:
                if required:
                    raise
                log.warning("ignoring credentials for %s: %s", registry, exc)
                return None
        return self._found_credentials[host]
