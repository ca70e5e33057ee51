"""Content-addressed image data, whatever it came from: descriptors, manifests, digests.

The bottom layer (go-containerregistry's ``v1``): no HTTP here.  A registry
(:mod:`pytest_multiarch.oci.registry`) and an OCI layout directory
(:mod:`pytest_multiarch.oci.layout`) both
hand out these types through the :class:`ImageSource` protocol, and both get the same guarantees:

- every manifest and blob is hashed and compared with the digest it was asked for
  (:func:`verify_digest`, or :class:`VerifyingReader` for a stream, which raises at EOF);
- content-addressed data is cached on disk by digest (:class:`DigestCache`), written atomically so
  that xdist workers can share the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeVar

from pytest_multiarch._fs import cache_root, write_atomic
from pytest_multiarch.errors import DigestMismatchError, InvalidManifestError, InvalidReference
from pytest_multiarch.oci.reference import validate_digest

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # containerd's limit
CHUNK = 1024 * 1024

# -- content ------------------------------------------------------------------------------------


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """``algorithm:hex`` of *data*."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, digest: str, *, what: str) -> None:
    """Raise :class:`DigestMismatchError` unless *data* hashes to *digest*."""
    actual = digest_of(data, digest.partition(":")[0])
    if actual != digest:
        raise DigestMismatchError(
            f"{what}: content hashes to {actual}, not {digest} as asked; the registry (or "
            "something in between) served corrupted or substituted content — do not trust it"
        )


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (the parts we use)."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object, *, what: str) -> Descriptor:
        """Validate one descriptor object from a manifest; raise :class:`InvalidManifestError`."""
        if not isinstance(obj, dict):
            raise InvalidManifestError(f"{what}: descriptor is not a JSON object")
        digest, size = obj.get("digest"), obj.get("size")
        if not isinstance(digest, str):
            raise InvalidManifestError(f"{what}: descriptor has no digest")
        try:
            validate_digest(digest, what=f"{what}: descriptor digest")
        except InvalidReference as exc:
            raise InvalidManifestError(str(exc)) from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifestError(f"{what}: descriptor {digest} has no valid size")
        platform = obj.get("platform")
        annotations = obj.get("annotations") or {}
        return cls(
            media_type=str(obj.get("mediaType", "")),
            digest=digest,
            size=size,
            platform=platform if isinstance(platform, dict) else None,
            annotations=annotations if isinstance(annotations, dict) else {},
        )


def load_json(raw: bytes, *, what: str, expected: str) -> Any:
    """*raw* parsed as JSON; :class:`InvalidManifestError` for invalid or too deeply nested JSON.

    The C decoder recurses per ``[``/``{``: 200,000 of them (well under the size caps) would be a
    ``RecursionError``, which no caller expects.
    """
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidManifestError(f"{what}: not valid JSON ({exc}); expected {expected}") from None
    except RecursionError:
        raise InvalidManifestError(
            f"{what}: JSON nested too deeply to be {expected} (a hostile or broken document)"
        ) from None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as fetched, its media type, verified digest and parsed JSON."""

    raw: bytes = field(repr=False)
    media_type: str
    digest: str
    parsed: Mapping[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, raw: bytes, digest: str, *, content_type: str = "", what: str) -> Manifest:
        """Parse *raw* (already verified against *digest*); raise :class:`InvalidManifestError`."""
        ctype = content_type.split(";")[0].strip().lower()
        if ctype == "text/html" or raw.lstrip()[:1] == b"<":
            raise InvalidManifestError(
                f"{what}: got an HTML page (Content-Type {ctype or 'unset'}) instead of a "
                "manifest; is that address a registry, or a proxy/login page in front of one?"
            )
        parsed = load_json(raw, what=what, expected="a manifest")
        if not isinstance(parsed, dict):
            raise InvalidManifestError(f"{what}: manifest JSON is not an object")
        if parsed.get("schemaVersion") == 1:
            raise InvalidManifestError(
                f"{what}: Docker schema 1 manifest, which has no platforms; push it again with "
                "a current client (schema 2 / OCI)"
            )
        media_type = parsed.get("mediaType") or ""
        if not isinstance(media_type, str):
            raise InvalidManifestError(f"{what}: mediaType is not a string")
        if not media_type:
            known = INDEX_TYPES + MANIFEST_TYPES
            media_type = ctype if ctype in known else (
                OCI_INDEX if "manifests" in parsed else OCI_MANIFEST
            )
        manifest = cls(raw, media_type, digest, parsed)
        if manifest.is_index:
            entries = parsed.get("manifests")
            if not isinstance(entries, list):
                raise InvalidManifestError(
                    f"{what}: index ({media_type}) has no 'manifests' list; it cannot name any "
                    "platform — rebuild and push the multi-arch image"
                )
            for entry in entries:
                Descriptor.from_json(entry, what=what)
        elif media_type in MANIFEST_TYPES:
            Descriptor.from_json(parsed.get("config"), what=f"{what} config")
            layers = parsed.get("layers")
            if not isinstance(layers, list):
                raise InvalidManifestError(f"{what}: image manifest has no 'layers' list")
            for layer in layers:
                Descriptor.from_json(layer, what=f"{what} layer")
        else:
            raise InvalidManifestError(
                f"{what}: unsupported manifest media type {media_type!r}; expected one of "
                f"{', '.join(INDEX_TYPES + MANIFEST_TYPES)}"
            )
        return manifest

    @property
    def is_index(self) -> bool:
        """Whether this is an image index / manifest list rather than one image."""
        return self.media_type in INDEX_TYPES

    @property
    def manifests(self) -> tuple[Descriptor, ...]:
        """The entries of an index (empty for an image manifest)."""
        if not self.is_index:
            return ()
        return tuple(Descriptor.from_json(e, what=self.digest) for e in self.parsed["manifests"])

    @property
    def config(self) -> Descriptor:
        """The config descriptor of an image manifest."""
        if self.is_index:
            raise InvalidManifestError(f"{self.digest} is an index; it has no config")
        return Descriptor.from_json(self.parsed["config"], what=self.digest)

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        """The layer descriptors of an image manifest, base layer first."""
        if self.is_index:
            return ()
        return tuple(Descriptor.from_json(e, what=self.digest) for e in self.parsed["layers"])


class VerifyingReader(io.RawIOBase):
    """Reads chunks, hashing as it goes; at EOF a wrong digest or size raises.

    An error from *chunks* itself propagates as it is: the source translates its own transport
    errors (the registry client wraps its response's chunks to do so).
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        digest: str,
        *,
        size: int | None,
        what: str,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._digest = digest
        self._hasher = hashlib.new(digest.partition(":")[0])
        self._size = size
        self._what = what
        self._on_close = on_close
        self._pending = memoryview(b"")
        self._seen = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._finish()
                return 0
            self._seen += len(chunk)
            if self._size is not None and self._seen > self._size:
                raise DigestMismatchError(
                    f"{self._what}: more than the {self._size} bytes its descriptor says "
                    f"({self._digest}); refusing the rest"
                )
            self._hasher.update(chunk)
            self._pending = memoryview(chunk)
        out = memoryview(buffer).cast("B")
        n = min(len(out), len(self._pending))
        out[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _finish(self) -> None:
        if self.verified:
            return
        actual = f"{self._digest.partition(':')[0]}:{self._hasher.hexdigest()}"
        if self._size is not None and self._seen != self._size:
            raise DigestMismatchError(
                f"{self._what}: got {self._seen} bytes, its descriptor says {self._size} "
                f"({self._digest})"
            )
        if actual != self._digest:
            raise DigestMismatchError(
                f"{self._what}: content hashes to {actual}, not {self._digest} as asked; the "
                "source served corrupted or substituted content — do not trust it"
            )
        self.verified = True

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


def verifying_file(path: Path, digest: str, *, size: int | None, what: str) -> BinaryIO:
    """Open *path* for buffered reading, verifying *digest* at EOF."""
    handle = path.open("rb")
    raw = VerifyingReader(
        iter(lambda: handle.read(CHUNK), b""), digest, size=size, what=what, on_close=handle.close
    )
    return io.BufferedReader(raw, CHUNK)


def blob_digest(blob: str | Descriptor) -> tuple[str, int | None]:
    """``(digest, size or None)`` of a digest string or a descriptor, validated."""
    if isinstance(blob, Descriptor):
        return validate_digest(blob.digest), blob.size
    return validate_digest(blob), None


# -- the source protocol ------------------------------------------------------------------------


class ImageRef(Protocol):
    """What resolution needs of a reference: a registry :class:`Reference` or an OCI layout one."""

    @property
    def digest(self) -> str | None: ...

    @property
    def pinned(self) -> str: ...

    def with_digest(self, digest: str) -> Self: ...


RefT_contra = TypeVar("RefT_contra", contravariant=True)


class ImageSource(Protocol[RefT_contra]):
    """Somewhere manifests and blobs come from, verified against their digests."""

    def get_manifest(self, ref: RefT_contra) -> Manifest:
        """The manifest or index *ref* names (by digest when it has one, else by tag)."""
        ...

    def get_blob(self, ref: RefT_contra, blob: str | Descriptor) -> bytes:
        """A small blob (a config), whole."""
        ...

    def open_blob(
        self, ref: RefT_contra, blob: str | Descriptor
    ) -> AbstractContextManager[BinaryIO]:
        """A large blob (a layer) as a stream that raises at EOF if its digest is wrong."""
        ...


# -- the digest cache ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch``, else ``~/.cache/pytest-multiarch`` (read per call)."""
    return cache_root()


class DigestCache:
    """Content-addressed files under ``DIR/blobs/<algorithm>/<hex>``; nothing else is written."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"DigestCache({str(self.directory)!r})"

    def path(self, digest: str) -> Path:
        algorithm, _, hexpart = validate_digest(digest).partition(":")
        return self.directory / "blobs" / algorithm / hexpart

    def get(self, digest: str) -> bytes | None:
        """The cached bytes for *digest*, re-verified; a corrupt entry is dropped."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if digest_of(data, digest.partition(":")[0]) != digest:
            log.warning("dropping corrupt cache entry %s", path)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store verified *data* atomically: a temp file in the same dir, then ``os.replace``."""
        path = self.path(digest)
        if path.is_file():  # content-addressed: another worker already wrote the same bytes
            return
        try:
            write_atomic(path, data)
        except OSError as exc:
            # The cache only saves requests; a read-only or full disk must not fail a check.
            log.warning("cannot write cache entry %s: %s", path, exc)
