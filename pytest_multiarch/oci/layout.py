"""OCI image layout directories (``oci:DIR[:TAG]``) as an :class:`~.content.ImageSource`.

This is what ``skopeo copy --all docker://… oci:DIR:TAG``, ``buildah manifest push --all … oci:DIR``
and ``docker buildx build --output type=oci`` write: ``index.json`` naming the tagged images by the
``org.opencontainers.image.ref.name`` annotation, and content under ``blobs/<algorithm>/<hex>``.
Gating such a directory checks an image before it is pushed anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from pytest_multiarch.errors import DigestMismatchError, InvalidReference, NotFoundError
from pytest_multiarch.oci.content import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    blob_digest,
    digest_of,
    verify_digest,
    verifying_file,
)
from pytest_multiarch.oci.reference import validate_digest

PREFIX = "oci:"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """``oci:DIR[:TAG][@DIGEST]``.  Like skopeo, the first ``:`` after ``oci:`` starts the tag."""

    path: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> LayoutReference:
        """Parse ``oci:DIR[:TAG][@sha256:…]``; :class:`InvalidReference` names the bad part."""
        if not text.startswith(PREFIX):
            raise InvalidReference(f"{text!r} is not an OCI layout reference (oci:DIR[:TAG])")
        rest = text[len(PREFIX):]
        rest, at, digest = rest.partition("@")
        if at:
            validate_digest(digest, what=f"digest in {text!r}:")
        path, colon, tag = rest.partition(":")
        if not path:
            raise InvalidReference(f"{text!r} names no directory (oci:DIR[:TAG])")
        if colon and not tag:
            raise InvalidReference(f"{text!r} has an empty tag after ':'")
        return cls(path, tag or None, digest if at else None)

    @property
    def pinned(self) -> str:
        """``oci:DIR@sha256:…``."""
        if self.digest is None:
            raise InvalidReference(f"{self} has no digest to pin; resolve it first")
        return f"{PREFIX}{self.path}@{self.digest}"

    def with_digest(self, digest: str) -> LayoutReference:
        """The same reference pinned to *digest*."""
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = PREFIX + self.path
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class OciLayout:
    """Reads any OCI layout directory a :class:`LayoutReference` names; verifies every digest."""

    def __repr__(self) -> str:
        return "OciLayout()"

    def get_manifest(self, ref: LayoutReference) -> Manifest:
        """The manifest *ref* names: by digest, by tag, or the layout's only image."""
        what = f"manifest of {ref}"
        if ref.digest is not None:
            raw = self._read_small(ref, ref.digest, what=what)
            return Manifest.parse(raw, ref.digest, what=what)
        index_raw = self._read_file(Path(ref.path) / "index.json", ref, "index.json")
        top = Manifest.parse(index_raw, digest_of(index_raw), what=f"index.json of {ref}")
        entry = self._select(top, ref)
        if entry is None:
            # No tag and no named entries: index.json itself lists the platform images.
            return top
        what = f"manifest {entry.digest} of {ref}"
        raw = self._read_small(ref, entry, what=what)
        return Manifest.parse(raw, entry.digest, content_type=entry.media_type, what=what)

    def get_blob(self, ref: LayoutReference, blob: str | Descriptor) -> bytes:
        """A small blob (a config), verified."""
        digest, size = blob_digest(blob)
        what = f"blob {digest} of {ref}"
        data = self._read_small(ref, blob, what=what)
        if size is not None and len(data) != size:
            raise DigestMismatchError(f"{what}: {len(data)} bytes, its descriptor says {size}")
        return data

    @contextlib.contextmanager
    def open_blob(self, ref: LayoutReference, blob: str | Descriptor) -> Iterator[BinaryIO]:
        """Stream a blob (a layer); reading to EOF verifies it."""
        digest, size = blob_digest(blob)
        path = self._blob_path(ref, digest)
        with verifying_file(path, digest, size=size, what=f"blob {digest} of {ref}") as reader:
            yield reader

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _select(top: Manifest, ref: LayoutReference) -> Descriptor | None:
        entries = top.manifests
        names = [e.annotations.get(REF_NAME) for e in entries]
        tagged = sorted({n for n in names if n})
        if ref.tag is not None:
            for entry, name in zip(entries, names, strict=True):
                if name == ref.tag:
                    return entry
            raise NotFoundError(
                f"no tag {ref.tag!r} in OCI layout {ref.path}; it has "
                f"{', '.join(tagged) or 'no tagged images'}"
            )
        if len(entries) == 1:
            return entries[0]
        if not tagged:
            return None
        raise NotFoundError(
            f"OCI layout {ref.path} holds several images; name one: "
            + ", ".join(f"{PREFIX}{ref.path}:{n}" for n in tagged)
        )

    def _blob_path(self, ref: LayoutReference, digest: str) -> Path:
        algorithm, _, hexpart = validate_digest(digest).partition(":")
        path = Path(ref.path) / "blobs" / algorithm / hexpart
        if not path.is_file():
            raise NotFoundError(
                f"blob {digest} is missing from OCI layout {ref.path} (looked for {path}); "
                "the layout is incomplete — copy it again with `skopeo copy --all`"
            )
        return path

    def _read_small(self, ref: LayoutReference, blob: str | Descriptor, *, what: str) -> bytes:
        digest, _ = blob_digest(blob)
        data = self._read_file(self._blob_path(ref, digest), ref, f"blob {digest}")
        verify_digest(data, digest, what=what)
        return data

    @staticmethod
    def _read_file(path: Path, ref: LayoutReference, what: str) -> bytes:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_MANIFEST_BYTES * 16 + 1)
        except FileNotFoundError:
            hint = (
                "; write one with `skopeo copy --all docker://IMAGE oci:DIR:TAG`"
                if path.name == "index.json" else ""
            )
            raise NotFoundError(f"OCI layout {ref.path} has no {what} ({path}){hint}") from None
        except OSError as exc:
            raise NotFoundError(f"cannot read {what} of OCI layout {ref.path}: {exc}") from None
        if len(data) > MAX_MANIFEST_BYTES * 16:
            raise NotFoundError(f"{what} of OCI layout {ref.path} is too large to hold")
        return data

