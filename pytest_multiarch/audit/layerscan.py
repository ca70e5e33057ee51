"""Scanning a variant's layers: each one streamed once, summarized, cached under its digest.

A layer's summary (its members in archive order and what is wrong with it) is cached as JSON under
its digest, since layers are shared across variants, images and runs; the layers that are not
cached are scanned in parallel threads.

The layers come as ``(digest, media_type, opener)``; ``opener()`` returns a context manager that
yields a binary stream which raises at EOF if the content does not match the digest (the registry
client's blob streams do), so this module does not depend on where layers come from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_multiarch._fs import cache_root, write_atomic
from pytest_multiarch.audit.decompress import (
    ByteStream,
    Source,
    ZstdFrames,
    compression_of,
    decompressed,
    decompression_errors,
)
from pytest_multiarch.audit.entries import Entry
from pytest_multiarch.audit.findings import Finding, Kind, Severity, short_digest
from pytest_multiarch.audit.packages import DbFile
from pytest_multiarch.audit.tarheader import TarError, TarTruncated
from pytest_multiarch.audit.tarscan import TarScanner
from pytest_multiarch.errors import DigestMismatchError, MultiarchError, UsageError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = [
    "Layer",
    "LayerSummary",
    "Opener",
    "default_cache_dir",
    "media_type_findings",
    "scan_layer",
    "scan_layers",
]

#: Bumped whenever the cached summary format or what a scan records (:class:`Entry`) changes.
SCHEMA = 3  # 2: ELF entries carry the CPU level they record; 3: package databases joined
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")


Opener = Callable[[], "AbstractContextManager[ByteStream]"]


class Layer(NamedTuple):
    """One layer to scan; a plain ``(digest, media_type, opener)`` tuple works as well."""

    digest: str
    media_type: str
    opener: Opener


@dataclass(frozen=True, slots=True)
class LayerSummary:
    """What one layer holds (entries in archive order) and what is wrong with it."""

    digest: str
    compression: str  # from the magic bytes: "gzip", "zstd", "tar"; "" for an empty blob
    entries: tuple[Entry, ...]
    findings: tuple[Finding, ...]
    compressed_bytes: int = 0
    tar_bytes: int = 0
    #: False when the layer could not be read to its end (transport, digest): never cached.
    cacheable: bool = True
    from_cache: bool = False
    #: The package databases the layer holds (read while it streamed, see audit.packages).
    package_files: tuple[DbFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "digest": self.digest, "compression": self.compression,
                "compressed_bytes": self.compressed_bytes, "tar_bytes": self.tar_bytes,
                "findings": [f.to_json() for f in self.findings],
                "entries": [e.to_json() for e in self.entries],
                "packages": [db.to_json() for db in self.package_files]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LayerSummary:
        if obj.get("schema") != SCHEMA:
            raise ValueError(f"cache schema {obj.get('schema')!r}, not {SCHEMA}")
        return cls(str(obj["digest"]), str(obj["compression"]),
                   tuple(Entry.from_json(e) for e in obj["entries"]),
                   tuple(Finding.from_json(f) for f in obj["findings"]),
                   int(obj["compressed_bytes"]), int(obj["tar_bytes"]), True, True,
                   tuple(DbFile.from_json(db) for db in obj.get("packages", ())))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/audit``, else ``~/.cache/…`` (read at each call)."""
    return cache_root("audit")


def scan_layers(
    layers: Iterable[Layer | tuple[str, str, Opener]],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> list[LayerSummary]:
    """Summaries of *layers*, in order: from the cache, else scanned (in parallel threads, up to
    *workers*, default the core count; isal and zstandard decompress without holding the GIL)."""
    ordered = [Layer(*item) for item in layers]
    if workers is not None and workers < 1:
        raise UsageError(f"audit workers must be at least 1, not {workers}")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    done: dict[str, LayerSummary] = {}
    todo: dict[str, Layer] = {}
    for layer in ordered:
        if layer.digest in done or layer.digest in todo:
            continue
        hit = _cache_load(directory, layer.digest)
        if hit is not None:
            done[layer.digest] = hit
        else:
            todo[layer.digest] = layer

    def scan_and_store(layer: Layer) -> LayerSummary:
        summary = scan_layer(layer)
        if summary.cacheable:
            _cache_store(directory, summary)
        return summary

    count = min(workers or os.cpu_count() or 1, len(todo))
    if count <= 1:
        done.update((d, scan_and_store(layer)) for d, layer in todo.items())
    else:
        with ThreadPoolExecutor(count, thread_name_prefix="multiarch-audit") as pool:
            done.update(zip(todo, pool.map(scan_and_store, todo.values()), strict=True))
    return [done[layer.digest] for layer in ordered]


# -- scanning one layer -------------------------------------------------------------------------


def scan_layer(layer: Layer | tuple[str, str, Opener]) -> LayerSummary:
    """Stream one layer and summarize it.  Never raises for bad content or a failing stream:
    those become findings (a stream failure makes the summary non-cacheable)."""
    layer = Layer(*layer)
    source: Source | None = None
    try:
        with layer.opener() as stream:
            source = Source(stream)
            return _scan_source(source, layer)
    except Exception as exc:
        error: BaseException = exc
        if source is not None and source.error is not None:
            error = source.error  # what the stream raised, not how a decompressor wrapped it
        elif not isinstance(exc, MultiarchError | OSError):
            raise  # neither the opener nor the stream: a bug here, not a bad layer
        kind = Kind.DIGEST_MISMATCH if isinstance(error, DigestMismatchError) else (
            Kind.LAYER_UNREADABLE)
        finding = Finding(kind, Severity.FAIL, f"layer {short_digest(layer.digest)}: {error}",
                          layer=layer.digest)
        return LayerSummary(layer.digest, "", (), (finding,), source.count if source else 0,
                            cacheable=False)


def _scan_source(source: Source, layer: Layer) -> LayerSummary:
    short = short_digest(layer.digest)
    head = source.peek(8)
    if not head:
        finding = Finding(Kind.ZERO_BYTE_LAYER, Severity.FAIL,
                          f"layer {short} is 0 bytes: not a tar archive in any compression, so "
                          "pulling or unpacking the image fails", layer=layer.digest)
        return LayerSummary(layer.digest, "", (), (finding,))
    compression = compression_of(head)
    frames = ZstdFrames() if compression == "zstd" else None
    if frames is not None:
        source.observer = frames.feed
    scanner = TarScanner(decompressed(compression, source), layer.digest)
    problem: Finding | None = None
    try:
        scanner.run()
        scanner.drain()  # to EOF: the gzip CRC and the stream's digest are checked there
    except _content_errors() as exc:
        if source.error is not None:
            raise source.error from None
        source.drain()  # so that the stream still verifies the digest of what it served
        problem = _content_problem(exc, compression, frames, scanner, source.count, layer.digest)
    if problem is None and frames is not None and not frames.complete:
        problem = _truncated(compression, source.count, layer.digest)
    findings = [*scanner.findings, *([problem] if problem else [])]
    return LayerSummary(layer.digest, compression, tuple(scanner.entries), tuple(findings),
                        source.count, scanner.tar_bytes,
                        package_files=tuple(scanner.package_files))


def _content_problem(
    exc: BaseException, compression: str, frames: ZstdFrames | None, scanner: TarScanner,
    size: int, digest: str,
) -> Finding:
    where = f" (the header at byte {scanner.header_at} of the tar"
    where += f", member {scanner.current!r})" if scanner.current else ")"
    if isinstance(exc, EOFError) or (
        isinstance(exc, TarTruncated) and frames is not None and not frames.complete
    ):
        return _truncated(compression, size, digest)
    if isinstance(exc, TarError) and exc.layer:  # it names layer, member and offset itself
        return Finding(Kind.CORRUPT_TAR, Severity.FAIL, f"{exc}; unpacking it fails", layer=digest)
    if isinstance(exc, TarError):
        return Finding(Kind.CORRUPT_TAR, Severity.FAIL,
                       f"layer {short_digest(digest)}: corrupt tar: {exc}{where}; unpacking it "
                       "fails", layer=digest)
    return Finding(Kind.CORRUPT_STREAM, Severity.FAIL,
                   f"layer {short_digest(digest)}: corrupt {compression} stream: {exc}{where}; "
                   "unpacking it fails", layer=digest)


def _truncated(compression: str, size: int, digest: str) -> Finding:
    return Finding(Kind.TRUNCATED_STREAM, Severity.FAIL,
                   f"layer {short_digest(digest)}: truncated {compression} stream: its {size} "
                   f"bytes end inside the {compression} stream; unpacking it fails with "
                   "'unexpected EOF'", layer=digest)


def _content_errors() -> tuple[type[BaseException], ...]:
    """What decompressors and the tar reader raise on bad content (the stream's own errors are
    told apart by :attr:`Source.error`)."""
    return (*decompression_errors(), TarError)


def _expected_compression(media_type: str) -> str | None:
    mt = media_type.lower()
    if mt.endswith(("+gzip", ".gzip")):
        return "gzip"
    if mt.endswith(("+zstd", ".zstd")):
        return "zstd"
    if mt.endswith(".tar"):
        return "tar"
    return None  # an unknown media type: the magic bytes decide


def media_type_findings(summary: LayerSummary, media_type: str) -> list[Finding]:
    """A warning when *media_type* names another compression than the content has (not
    part of the summary: that is cached by digest, and one blob may be listed under
    another media type)."""
    expected = _expected_compression(media_type)
    if expected is None or not summary.compression or expected == summary.compression:
        return []
    return [Finding(Kind.MEDIA_TYPE_MISMATCH, Severity.WARN,
                    f"layer {short_digest(summary.digest)}: media type {media_type} says "
                    f"{expected}, the content is {summary.compression} (magic bytes); audited as "
                    f"{summary.compression}, but runtimes that trust the media type fail to "
                    "unpack it", layer=summary.digest)]


# -- the cache ----------------------------------------------------------------------------------


def _cache_path(directory: Path, digest: str) -> Path | None:
    if not _DIGEST.match(digest):
        return None  # anything else could name a path outside the cache: not cached
    algorithm, _, hexpart = digest.partition(":")
    return directory / f"v{SCHEMA}" / f"{algorithm}-{hexpart}.json"


def _cache_load(directory: Path, digest: str) -> LayerSummary | None:
    path = _cache_path(directory, digest)
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            summary = LayerSummary.from_json(json.load(handle))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # unreadable or from another version: scan again, overwrite
    return summary if summary.digest == digest else None


def _cache_store(directory: Path, summary: LayerSummary) -> None:
    path = _cache_path(directory, summary.digest)
    if path is None:
        return
    # dumps, one write: json.dump writes thousands of small chunks. Atomic: xdist workers sharing
    # the cache see whole files only; an unwritable cache only costs time.
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(summary.to_json(), separators=(",", ":")))
