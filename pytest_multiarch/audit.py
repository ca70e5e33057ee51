"""Static audit of one variant's layers: predict "exec format error" before running anything.

Each layer is streamed once (gzip through isal, zstd through zstandard, or plain tar), never
extracted and never held in memory: a small tar reader decompresses into one reusable buffer,
looks at the first bytes of each regular file (ELF header and PT_INTERP, or a ``#!`` line) and
skips the rest.  A layer's summary is cached as JSON under its digest, since layers are shared
across variants, images and runs.  The summaries are applied in order, with OCI whiteouts, to a
model of the final filesystem, and the verdicts are reached on that model: the entrypoint (through
PATH, symlinks and ``#!`` interpreters) must be an ELF binary of the variant's architecture whose
loader exists, and other foreign binaries are listed unless allowlisted.

The layers come as ``(digest, media_type, opener)``; ``opener()`` returns a context manager that
yields a binary stream which raises at EOF if the content does not match the digest (the registry
client's blob streams do), so this module does not depend on where layers come from.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import posixpath
import re
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol, cast

from pytest_multiarch import elf
from pytest_multiarch.elf import ElfHeader, InvalidElf
from pytest_multiarch.errors import DigestMismatchError, MultiarchError, UsageError
from pytest_multiarch.platforms import ArchInfo, Platform

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from _typeshed import WriteableBuffer

__all__ = [
    "AuditResult",
    "Finding",
    "Kind",
    "Layer",
    "LayerSummary",
    "Severity",
    "audit_variant",
    "default_cache_dir",
    "scan_layer",
    "scan_layers",
]

#: Bumped whenever the cached summary format or what a scan records changes.
SCHEMA = 1
#: Docker's PATH for images whose config sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BUFFER = 1 << 20  # decompressed bytes per read; the only large allocation of a scan
_MAX_SYMLINKS = 40  # Linux MAXSYMLINKS: more hops give ELOOP
_MAX_SCRIPT_DEPTH = 4  # the kernel gives up (ELOOP) on longer chains of #! interpreters
_MAX_PAX = 256 * 1024  # a pax or GNU long-name record larger than this is not a real archive
_UNSAFE_LISTED = 20  # unsafe member names reported one by one per layer; the rest are counted
_ZERO_BLOCK = bytes(512)
# tar type flags, as the ints that indexing a header gives
_HARDLINK, _SYMLINK, _DIRECTORY = ord("1"), ord("2"), ord("5")
_PAX, _SOLARIS_PAX, _GLOBAL_PAX = ord("x"), ord("X"), ord("g")
_GNU_LONGNAME, _GNU_LONGLINK = ord("L"), ord("K")
_EXTENSIONS = frozenset((_PAX, _SOLARIS_PAX, _GLOBAL_PAX, _GNU_LONGNAME, _GNU_LONGLINK))
_LINKS = frozenset((_HARDLINK, _SYMLINK))
_NOT_REGULAR = frozenset(b"123456")  # links, devices, directory, fifo
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")


# -- public value types -------------------------------------------------------------------------


class ByteStream(Protocol):
    """What an opener yields: a readable binary stream (``readinto`` is used when present)."""

    def read(self, size: int = -1, /) -> bytes | None: ...


Opener = Callable[[], "AbstractContextManager[ByteStream]"]


class Layer(NamedTuple):
    """One layer to scan; a plain ``(digest, media_type, opener)`` tuple works as well."""

    digest: str
    media_type: str
    opener: Opener


class Severity(StrEnum):
    """How much a finding weighs: only ``fail`` makes :attr:`AuditResult.ok` false."""

    FAIL = "fail"  # the image would not work on the variant's platform
    WARN = "warn"  # suspicious, worth a look, not failing
    INFO = "info"  # recorded for the report (an allowlisted foreign binary …)


class Kind(StrEnum):
    """What a finding is about; stable names for reports, baselines and tests."""

    ENTRYPOINT_FOREIGN = "entrypoint-foreign-arch"
    ENTRYPOINT_MISSING = "entrypoint-missing"
    ENTRYPOINT_NOT_EXECUTABLE = "entrypoint-not-executable"
    NO_ENTRYPOINT = "no-entrypoint"
    CONFIG_MISMATCH = "config-platform-mismatch"
    SYMLINK_LOOP = "symlink-loop"
    INTERPRETER_LOOP = "interpreter-loop"
    LOADER_MISSING = "loader-missing"
    INVALID_ELF = "invalid-elf"
    FOREIGN_ELF = "foreign-elf"
    FOREIGN_ELF_ALLOWED = "foreign-elf-allowed"
    HOST_NATIVE_ONLY = "host-native-only"
    ARM_SOFT_FLOAT = "arm-soft-float"
    ARM_HARD_FLOAT = "arm-hard-float"
    UNSAFE_PATH = "unsafe-path"
    HARDLINK_MISSING = "hardlink-missing"
    ZERO_BYTE_LAYER = "zero-byte-layer"
    TRUNCATED_STREAM = "truncated-stream"
    CORRUPT_STREAM = "corrupt-stream"
    CORRUPT_TAR = "corrupt-tar"
    MEDIA_TYPE_MISMATCH = "media-type-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    LAYER_UNREADABLE = "layer-unreadable"
    NOT_AUDITED = "not-audited"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the audit has to say; ``path`` is a path in the image, ``layer`` a digest."""

    kind: Kind
    severity: Severity
    message: str
    path: str = ""
    layer: str = ""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "severity": self.severity.value, "message": self.message,
                "path": self.path, "layer": self.layer}

    @classmethod
    def from_json(cls, obj: Mapping[str, str]) -> Finding:
        return cls(Kind(obj["kind"]), Severity(obj["severity"]), str(obj["message"]),
                   str(obj.get("path", "")), str(obj.get("layer", "")))

    def __str__(self) -> str:
        return f"{self.severity.value.upper()} {self.kind.value}: {self.message}"


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The verdict on one variant.  ``ok`` unless a finding has severity ``fail``."""

    image: str
    platform: Platform
    findings: tuple[Finding, ...]
    #: ELF files of the final filesystem by architecture (``arm64``, ``arm/v6``, ``invalid`` …).
    elf_counts: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: The paths the kernel would execute, in order: entrypoint, then #! interpreters.
    exec_chain: tuple[str, ...] = ()
    layers_scanned: int = 0
    layers_cached: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.FAIL)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARN)

    def format(self, *, limit: int = 10) -> str:
        """A report paragraph: the verdict, ELF counts, findings grouped by kind."""
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.elf_counts.items())) or "none"
        count = len(self.failures)
        verdict = "ok" if self.ok else f"FAILED ({count} failing finding{'s' * (count != 1)})"
        lines = [f"{self.platform} variant of {self.image}: {verdict}; ELF files: {counts}"]
        groups: dict[tuple[Severity, Kind], list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault((finding.severity, finding.kind), []).append(finding)
        order = {Severity.FAIL: 0, Severity.WARN: 1, Severity.INFO: 2}
        for (severity, kind), group in sorted(groups.items(), key=lambda g: order[g[0][0]]):
            lines.append(f"  {severity.value.upper()} {kind.value}: {group[0].message}")
            if len(group) > 1:
                paths = [f.path for f in group[1:limit] if f.path]
                more = len(group) - 1 - len(paths)
                tail = f" … and {more} more" if more > 0 else ""
                lines.append(f"    also: {', '.join(paths)}{tail}")
        return "\n".join(lines)


# -- what a layer scan records ------------------------------------------------------------------


class Op(StrEnum):
    """What a layer member does to the filesystem (one letter: cached summaries stay small)."""

    FILE = "f"
    DIR = "d"
    SYMLINK = "l"
    HARDLINK = "h"
    OTHER = "o"  # device, fifo: present, never executable
    WHITEOUT = "w"  # path: what the layer deletes from the layers below
    OPAQUE = "q"  # path: the directory whose lower contents the layer hides


class Entry(NamedTuple):
    """One member of a layer, as far as the audit cares (a tuple: tens of thousands per layer)."""

    op: Op
    path: str  # absolute, normalized
    target: str = ""  # symlink target as written; hardlink target normalized
    mode: int = 0
    elf: ElfHeader | InvalidElf | None = None
    shebang: tuple[str, str] | None = None  # (interpreter, argument)

    def to_json(self) -> list[Any]:
        if self.op is Op.FILE:
            out: list[Any] = [self.op.value, self.path, self.mode, _elf_to_json(self.elf),
                              list(self.shebang) if self.shebang else None]
            while out[-1] is None:
                out.pop()
            return out
        if self.target:
            return [self.op.value, self.path, self.target]
        return [self.op.value, self.path]

    @classmethod
    def from_json(cls, obj: Sequence[Any]) -> Entry:
        op = Op(obj[0])
        if op is Op.FILE:
            shebang = obj[4] if len(obj) > 4 else None
            return cls(op, str(obj[1]), mode=int(obj[2]),
                       elf=_elf_from_json(obj[3] if len(obj) > 3 else None),
                       shebang=(str(shebang[0]), str(shebang[1])) if shebang else None)
        return cls(op, str(obj[1]), str(obj[2]) if len(obj) > 2 else "")


def _elf_to_json(header: ElfHeader | InvalidElf | None) -> Any:
    if header is None:
        return None
    if isinstance(header, InvalidElf):
        return {"invalid": header.reason}
    return [header.elf_class, header.little_endian, header.e_type, header.machine, header.flags,
            header.interp, header.has_interp, header.has_dynamic, header.needed, header.complete]


def _elf_from_json(obj: Any) -> ElfHeader | InvalidElf | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return InvalidElf(str(obj["invalid"]))
    cls, le, e_type, machine, flags, interp, has_interp, has_dyn, needed, complete = obj
    return ElfHeader(int(cls), bool(le), int(e_type), int(machine), int(flags),
                     None if interp is None else str(interp), bool(has_interp), bool(has_dyn),
                     int(needed), bool(complete))


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

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "digest": self.digest, "compression": self.compression,
                "compressed_bytes": self.compressed_bytes, "tar_bytes": self.tar_bytes,
                "findings": [f.to_json() for f in self.findings],
                "entries": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LayerSummary:
        if obj.get("schema") != SCHEMA:
            raise ValueError(f"cache schema {obj.get('schema')!r}, not {SCHEMA}")
        return cls(str(obj["digest"]), str(obj["compression"]),
                   tuple(Entry.from_json(e) for e in obj["entries"]),
                   tuple(Finding.from_json(f) for f in obj["findings"]),
                   int(obj["compressed_bytes"]), int(obj["tar_bytes"]), True, True)


# -- the top-level call -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/audit``, else ``~/.cache/…`` (read at each call)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-multiarch" / "audit"


def audit_variant(
    image_name: str,
    platform: Platform,
    config: Mapping[str, Any],
    layers: Iterable[Layer | tuple[str, str, Opener]],
    *,
    host: Platform,
    allow: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> AuditResult:
    """Audit one variant: *image_name* as it should appear in messages (``repo@sha256:…``),
    its *platform*, its image *config* (the whole config blob or just its ``config`` object),
    its *layers* in order, and the *host* the tests run on (for the host-native-only verdict).

    *allow* holds glob patterns (``fnmatch``; ``*`` also matches ``/``) of absolute paths in the
    image whose foreign architecture is intended.  Bad layer content gives findings, not errors.
    """
    ordered = [Layer(*item) for item in layers]
    summaries = scan_layers(ordered, cache_dir=cache_dir, workers=workers)
    cached = sum(s.from_cache for s in summaries)
    if platform.os != "linux":
        note = Finding(Kind.NOT_AUDITED, Severity.INFO,
                       f"{platform} variant of {image_name}: only linux variants are audited")
        return AuditResult(image_name, platform, (note,), {}, (), len(summaries) - cached, cached)
    fs = _Filesystem()
    findings: list[Finding] = []
    layer_types = {layer.digest: layer.media_type for layer in ordered}
    unread: list[str] = []  # layers not read to their end: the filesystem model lacks their part
    for summary in summaries:
        findings.extend(summary.findings)
        findings.extend(_media_type_findings(summary, layer_types.get(summary.digest, "")))
        if any(f.kind in _UNREAD for f in summary.findings):
            unread.append(_short(summary.digest))
        fs.apply(summary)
    findings.extend(fs.findings)
    verdict = _Verdict(image_name, platform, config, fs, host, tuple(allow), tuple(unread))
    findings.extend(verdict.run())
    return AuditResult(image_name, platform, tuple(findings), dict(verdict.elf_counts),
                       tuple(verdict.exec_chain), len(summaries) - cached, cached)


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
    source: _Source | None = None
    try:
        with layer.opener() as stream:
            source = _Source(stream)
            return _scan_source(source, layer)
    except Exception as exc:
        error: BaseException = exc
        if source is not None and source.error is not None:
            error = source.error  # what the stream raised, not how a decompressor wrapped it
        elif not isinstance(exc, MultiarchError | OSError):
            raise  # neither the opener nor the stream: a bug here, not a bad layer
        kind = Kind.DIGEST_MISMATCH if isinstance(error, DigestMismatchError) else (
            Kind.LAYER_UNREADABLE)
        finding = Finding(kind, Severity.FAIL, f"layer {_short(layer.digest)}: {error}",
                          layer=layer.digest)
        return LayerSummary(layer.digest, "", (), (finding,), source.count if source else 0,
                            cacheable=False)


def _scan_source(source: _Source, layer: Layer) -> LayerSummary:
    short = _short(layer.digest)
    head = source.peek(8)
    if not head:
        finding = Finding(Kind.ZERO_BYTE_LAYER, Severity.FAIL,
                          f"layer {short} is 0 bytes: not a tar archive in any compression, so "
                          "pulling or unpacking the image fails", layer=layer.digest)
        return LayerSummary(layer.digest, "", (), (finding,))
    compression = _compression_of(head)
    frames = _ZstdFrames() if compression == "zstd" else None
    if frames is not None:
        source.observer = frames.feed
    scanner = _TarScanner(_decompressed(compression, source), layer.digest)
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
                        source.count, scanner.tar_bytes)


def _content_problem(
    exc: BaseException, compression: str, frames: _ZstdFrames | None, scanner: _TarScanner,
    size: int, digest: str,
) -> Finding:
    where = f" (the header at byte {scanner.header_at} of the tar"
    where += f", member {scanner.current!r})" if scanner.current else ")"
    if isinstance(exc, EOFError) or (
        isinstance(exc, _Truncated) and frames is not None and not frames.complete
    ):
        return _truncated(compression, size, digest)
    if isinstance(exc, _TarError):
        return Finding(Kind.CORRUPT_TAR, Severity.FAIL,
                       f"layer {_short(digest)}: corrupt tar: {exc}{where}; unpacking it fails",
                       layer=digest)
    return Finding(Kind.CORRUPT_STREAM, Severity.FAIL,
                   f"layer {_short(digest)}: corrupt {compression} stream: {exc}{where}; "
                   "unpacking it fails", layer=digest)


def _truncated(compression: str, size: int, digest: str) -> Finding:
    return Finding(Kind.TRUNCATED_STREAM, Severity.FAIL,
                   f"layer {_short(digest)}: truncated {compression} stream: its {size} bytes "
                   f"end inside the {compression} stream; unpacking it fails with 'unexpected "
                   "EOF'", layer=digest)


def _content_errors() -> tuple[type[BaseException], ...]:
    """What decompressors and the tar reader raise on bad content (the stream's own errors are
    told apart by :attr:`_Source.error`)."""
    import zstandard

    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error, _TarError,
                                         zstandard.ZstdError]
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
        pass
    else:
        errors.append(cast("type[BaseException]", isal_zlib.error))
    return tuple(errors)


def _compression_of(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "tar"


def _expected_compression(media_type: str) -> str | None:
    mt = media_type.lower()
    if mt.endswith(("+gzip", ".gzip")):
        return "gzip"
    if mt.endswith(("+zstd", ".zstd")):
        return "zstd"
    if mt.endswith(".tar"):
        return "tar"
    return None  # an unknown media type: the magic bytes decide


def _media_type_findings(summary: LayerSummary, media_type: str) -> list[Finding]:
    expected = _expected_compression(media_type)
    if expected is None or not summary.compression or expected == summary.compression:
        return []
    return [Finding(Kind.MEDIA_TYPE_MISMATCH, Severity.WARN,
                    f"layer {_short(summary.digest)}: media type {media_type} says {expected}, "
                    f"the content is {summary.compression} (magic bytes); audited as "
                    f"{summary.compression}, but runtimes that trust the media type fail to "
                    "unpack it", layer=summary.digest)]


class _ReadInto(Protocol):
    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


def _decompressed(compression: str, source: _Source) -> _ReadInto:
    if compression == "gzip":
        try:
            from isal import igzip
        except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
            import gzip

            return gzip.GzipFile(fileobj=source, mode="rb")
        # The C reader under IGzipFile: it decompresses straight into our buffer (IGzipFile's
        # readinto adds a copy, ~15% of the scan) and releases the GIL while it does.
        raw_reader = getattr(igzip, "_IGzipReader", None)
        if raw_reader is None:  # pragma: no cover - a future isal without it
            return cast("_ReadInto", igzip.open(source, "rb"))  # type: ignore[no-untyped-call]
        reader: _ReadInto = raw_reader(source, 512 * 1024)
        return reader
    if compression == "zstd":
        import zstandard

        stream: _ReadInto = zstandard.ZstdDecompressor().stream_reader(
            cast("BinaryIO", source), read_size=512 * 1024, read_across_frames=True, closefd=False
        )
        return stream
    return source


class _Source(io.RawIOBase):
    """The opener's stream with the peeked bytes put back; notes what the stream raises."""

    def __init__(self, stream: ByteStream) -> None:
        super().__init__()
        self._stream = stream
        self._readinto: Callable[[memoryview], int | None] | None = getattr(
            stream, "readinto", None
        )
        self._head = b""
        self.count = 0
        self.error: BaseException | None = None
        self.observer: Callable[[memoryview], None] | None = None

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        """Up to *size* first bytes (fewer only at EOF), served again by later reads."""
        buffer = bytearray(size)
        have = 0
        while have < size:
            n = self._raw_readinto(memoryview(buffer)[have:])
            if not n:
                break
            have += n
        self._head = bytes(buffer[:have])
        return self._head

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            n = self._raw_readinto(out)
        if n and self.observer is not None:
            self.observer(out[:n])
        self.count += n
        return n

    def _raw_readinto(self, out: memoryview) -> int:
        try:
            if self._readinto is not None:
                return self._readinto(out) or 0
            data = self._stream.read(len(out)) or b""
        except Exception as exc:
            self.error = exc
            raise
        out[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        scratch = memoryview(bytearray(64 * 1024))
        while self.readinto(scratch):
            pass


class _ZstdFrames:
    """Follows zstd frame and block headers in the compressed bytes as they pass: zstandard's
    stream reader ends a stream cut mid-frame silently, this tells whether the last frame ended."""

    __slots__ = ("_checksum", "_header", "_need", "_skip", "_state", "frames")

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._header = bytearray()
        self._skip = 0
        self._checksum = False
        self.frames = 0

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._header and not self._skip and self.frames > 0

    def feed(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n and self._state != "garbage":
            if self._skip:
                step = min(self._skip, n - i)
                i += step
                self._skip -= step
                continue
            step = min(self._need - len(self._header), n - i)
            self._header += data[i : i + step]
            i += step
            if len(self._header) == self._need:
                header, self._header = bytes(self._header), bytearray()
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
                self.frames += 1
            elif 0x184D2A50 <= magic <= 0x184D2A5F:
                self._state, self._need = "skippable", 4
            else:
                self._state = "garbage"  # zstandard itself reports what is wrong
        elif state == "descriptor":
            fhd = header[0]
            single = fhd >> 5 & 1
            self._checksum = bool(fhd >> 2 & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
            self._state, self._need = ("frame-header", rest) if rest else ("block", 3)
        elif state == "frame-header":
            self._state, self._need = "block", 3
        elif state == "block":
            value = int.from_bytes(header, "little")
            last, block_type, size = value & 1, value >> 1 & 3, value >> 3
            self._skip = 1 if block_type == 1 else size
            if not last:
                self._state, self._need = "block", 3
            elif self._checksum:
                self._state, self._need = "checksum", 4
            else:
                self._state, self._need = "magic", 4
        elif state == "checksum":
            self._state, self._need = "magic", 4
        elif state == "skippable":
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = "magic", 4


class _TarError(Exception):
    """The tar stream is not a valid archive."""


class _Truncated(_TarError):
    """The tar stream ends inside a header or a member."""


class _TarScanner:
    """A streaming tar reader that keeps only what the audit needs of each member."""

    def __init__(self, source: _ReadInto, digest: str) -> None:
        self._source = source
        self._digest = digest
        self._buf = bytearray(_BUFFER)
        self._mv = memoryview(self._buf)
        self._pos = 0
        self._end = 0
        self._eof = False
        self.tar_bytes = 0
        self.current = ""  # the member being read, and where its (first) header began
        self.header_at = 0
        self.entries: list[Entry] = []
        self.findings: list[Finding] = []
        self._unsafe = 0

    # buffer handling ---------------------------------------------------------------------------

    def _read(self, into: memoryview) -> int:
        n = self._source.readinto(into) or 0
        self.tar_bytes += n
        return n

    def _fill(self, size: int) -> int:
        """Make *size* bytes (at most the buffer) available at ``_pos``; fewer only at EOF."""
        avail = self._end - self._pos
        if avail >= size or self._eof:
            return avail
        if self._pos:
            self._buf[:avail] = self._buf[self._pos : self._end]
            self._pos, self._end = 0, avail
        while self._end < size:
            n = self._read(self._mv[self._end :])
            if not n:
                self._eof = True
                break
            self._end += n
        return self._end

    def _skip(self, size: int) -> None:
        avail = self._end - self._pos
        if size <= avail:
            self._pos += size
            return
        size -= avail
        self._pos = self._end = 0
        while size:
            n = self._read(self._mv)
            if not n:
                self._eof = True
                raise _Truncated(f"the archive ends {size} bytes before the end of the member")
            if n > size:
                self._pos, self._end = size, n
                return
            size -= n

    def _take(self, size: int) -> bytes:
        if size > _MAX_PAX:
            raise _TarError(f"an extended header of {size} bytes")
        if self._fill(size) < size:
            raise _Truncated("the archive ends inside an extended header")
        data = bytes(self._mv[self._pos : self._pos + size])
        self._skip(_padded(size))
        return data

    def drain(self) -> None:
        self._pos = self._end
        while not self._eof:
            if not self._read(self._mv):
                self._eof = True

    # members -----------------------------------------------------------------------------------

    def run(self) -> None:
        # The hot loop of a scan: one pass per member, so it avoids calls it can do without
        # (a /usr layer has tens of thousands of members; each microsecond here is ~2% of the
        # decompression floor).
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        buf, add = self._buf, self.entries.append
        while True:
            if not (pax or long_name or long_link):
                self.header_at, self.current = self.tar_bytes - (self._end - self._pos), ""
            if self._end - self._pos < 512:
                have = self._fill(512)
                if have == 0:
                    return  # EOF at a member boundary without the end marker: tolerated, like Go
                if have < 512:
                    raise _Truncated("the archive ends inside a member header")
            pos = self._pos
            block = buf[pos : pos + 512]  # a bytearray copy; no further bytes() copy needed
            self._pos = pos + 512
            if block == _ZERO_BLOCK:
                return
            # The header checksum is the sum of its bytes (the field itself as spaces).  adler32's
            # low half is 1 + that sum modulo 65521, computed in C: a mismatch there is certain,
            # a match leaves only differences of exact multiples of 65521 undetected.
            try:
                stored = int(block[148:156].strip(b" \0"), 8)
                size = int(block[124:136].strip(b" \0") or b"0", 8)
            except ValueError:  # base-256 (past 8 GiB), or garbage: the careful way
                stored, size = _number(block[148:156]), _number(block[124:136])
            if (stored + sum(block[148:156]) - 255) % 65521 != zlib.adler32(block) & 0xFFFF:
                _check_signed(block, stored)
            typeflag = block[156]
            if typeflag in _EXTENSIONS:
                if typeflag in (_PAX, _SOLARIS_PAX):
                    pax = _parse_pax(self._take(size))
                elif typeflag == _GNU_LONGNAME:
                    long_name = _text(self._take(size))
                elif typeflag == _GNU_LONGLINK:
                    long_link = _text(self._take(size))
                else:
                    self._take(size)  # global pax records: nothing the audit needs
                continue
            if pax or long_name or long_link:
                if "size" in pax and pax["size"].isdigit():
                    size = int(pax["size"])
                name = long_name or pax.get("GNU.sparse.name") or pax.get("path") or _name(block)
                link = long_link or pax.get("linkpath") or _text(block[157:257])
                sniff = "GNU.sparse.major" not in pax  # its data starts with a sparse map
                pax, long_name, long_link = {}, None, None
            else:
                name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
                if block[345] and block[257:263] == b"ustar\x00":  # POSIX ustar prefix field
                    name = f"{_text(block[345:500])}/{name}"
                link = _text(block[157:257]) if typeflag in _LINKS else ""
                sniff = True
            self.current = name
            if not name or name[0] in "/." or "//" in name or "/." in name:
                path = self._normalized(name)
            else:
                path = "/" + name.rstrip("/")
            padded = (size + 511) & ~511
            if ".wh." in path and self._whiteout(path):
                pass
            elif typeflag not in _NOT_REGULAR:  # POSIX: unknown types read as regular files
                if self._end - self._pos < 4:
                    self._fill(4)
                magic = buf[self._pos : self._pos + 4]
                if sniff and size > 3 and (magic == elf.ELF_MAGIC or magic[:2] == b"#!"):
                    elf_header, shebang = self._sniff(size)
                    add(Entry(Op.FILE, path, "", _octal(block[100:108]), elf_header, shebang))
                else:
                    add(Entry(Op.FILE, path, "", _octal(block[100:108])))
            elif typeflag == _DIRECTORY:
                if path != "/":
                    add(Entry(Op.DIR, path))
            elif typeflag == _SYMLINK:
                add(Entry(Op.SYMLINK, path, link))
            elif typeflag == _HARDLINK:
                add(Entry(Op.HARDLINK, path, self._normalized(link)))
            else:
                add(Entry(Op.OTHER, path))
            if padded <= self._end - self._pos:
                self._pos += padded
            else:
                self._skip(padded)

    def _whiteout(self, path: str) -> bool:
        head, _, base = path.rpartition("/")
        if not base.startswith(".wh."):
            return False
        if base == ".wh..wh..opq":
            self.entries.append(Entry(Op.OPAQUE, head or "/"))
        elif not base.startswith(".wh..wh."):  # other .wh..wh. names are aufs bookkeeping
            self.entries.append(Entry(Op.WHITEOUT, f"{head}/{base[4:]}"))
        return True

    def _sniff(self, size: int) -> tuple[ElfHeader | InvalidElf | None, tuple[str, str] | None]:
        """The ELF header or ``#!`` line of the member at ``_pos`` (its first 4 bytes are there)."""
        if self._buf[self._pos : self._pos + 4] == elf.ELF_MAGIC:
            want = min(size, elf.HEADER_BYTES)
            have = min(self._fill(want), want)
            header = elf.parse_elf(self._mv[self._pos : self._pos + have], file_size=size)
            # Program headers past the first read, then the PT_INTERP they point at: two rounds.
            limit = min(size, elf.MAX_BYTES)
            while isinstance(header, ElfHeader) and have < header.needed <= limit:
                have = min(self._fill(header.needed), header.needed)
                header = elf.parse_elf(self._mv[self._pos : self._pos + have], file_size=size)
            return header, None
        have = min(self._fill(256), size, 256)
        return None, elf.parse_shebang(self._mv[self._pos : self._pos + have])

    def _normalized(self, name: str) -> str:
        parts: list[str] = []
        escapes = False
        for part in name.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                else:
                    escapes = True
                continue
            parts.append(part)
        path = "/" + "/".join(parts)
        if escapes or name.startswith("/"):
            self._unsafe += 1
            if self._unsafe <= _UNSAFE_LISTED:
                self.findings.append(self._unsafe_finding(name, path, escapes))
            elif self._unsafe == _UNSAFE_LISTED + 1:
                self.findings.append(Finding(
                    Kind.UNSAFE_PATH, Severity.WARN if not escapes else Severity.FAIL,
                    f"layer {_short(self._digest)}: more unsafe member names follow; only the "
                    f"first {_UNSAFE_LISTED} are listed", layer=self._digest))
        return path

    def _unsafe_finding(self, name: str, path: str, escapes: bool) -> Finding:
        layer = _short(self._digest)
        if escapes:
            return Finding(Kind.UNSAFE_PATH, Severity.FAIL,
                           f"layer {layer}: member {name!r} climbs out of the root with '..'; "
                           f"Docker refuses to unpack such a layer, others write it at {path} "
                           "(audited as that)", path=path, layer=self._digest)
        return Finding(Kind.UNSAFE_PATH, Severity.WARN,
                       f"layer {layer}: member name {name!r} is absolute; runtimes strip the "
                       f"leading '/' (audited as {path})", path=path, layer=self._digest)


def _padded(size: int) -> int:
    return (size + 511) & ~511


def _text(raw: bytes | bytearray) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _name(block: bytes | bytearray) -> str:
    name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
    # POSIX ustar has a prefix field (GNU uses that space for other things)
    if block[345] and block[257:263] == b"ustar\x00":
        return f"{_text(block[345:500])}/{name}"
    return name


def _octal(raw: bytes | bytearray) -> int:
    try:
        return int(raw.strip(b" \0") or b"0", 8)
    except ValueError:
        return _number(raw)


def _number(raw: bytes | bytearray) -> int:
    if raw[:1] and raw[0] & 0x80:  # GNU base-256, for sizes past 8 GiB
        if raw[0] == 0xFF:
            return int.from_bytes(raw, "big", signed=True)
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _TarError(f"bad number field {raw!r} in a header") from None


def _check_signed(block: bytes | bytearray, stored: int) -> None:
    """The exact check, with the signed sum some old tars wrote; raises unless one matches."""
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored not in (unsigned, 256 + sum(struct.unpack_from("148b8x356b", block))):
        raise _TarError(f"header checksum {stored} does not match {unsigned}: not a tar header")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.find(b" ", pos)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        if length <= space - pos or pos + length > len(data):
            raise _TarError("a malformed pax extended header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[_text(key)] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _short(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    except OSError:
        return  # an unwritable cache only costs time
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # dumps, one write: json.dump writes thousands of small chunks
            handle.write(json.dumps(summary.to_json(), separators=(",", ":")))
        os.replace(temp, path)  # atomic: xdist workers sharing the cache see whole files only
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)


# -- the final filesystem -----------------------------------------------------------------------


class _Dir:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, _Dir | Entry] = {}


class _Missing(Exception):
    """A path (or a component of it) does not exist."""


class _Loop(Exception):
    """More than MAXSYMLINKS symlinks on the way."""


class _Filesystem:
    """The image's final filesystem tree, from layer summaries applied in order."""

    def __init__(self) -> None:
        self.root = _Dir()
        self.findings: list[Finding] = []

    def apply(self, summary: LayerSummary) -> None:
        # OCI: whiteouts hide what the layers below hold, never what their own layer holds.
        for entry in summary.entries:
            if entry.op is Op.WHITEOUT:
                self._remove(entry.path)
            elif entry.op is Op.OPAQUE:
                with contextlib.suppress(_Missing, _Loop):
                    node = self.walk(entry.path)[1]
                    if isinstance(node, _Dir):
                        node.children.clear()
        for entry in summary.entries:
            if entry.op not in (Op.WHITEOUT, Op.OPAQUE):
                self._add(entry, summary.digest)

    def _remove(self, path: str) -> None:
        head, _, name = path.rpartition("/")
        with contextlib.suppress(_Missing, _Loop):
            parent = self.walk(head or "/")[1]
            if isinstance(parent, _Dir):
                parent.children.pop(name, None)

    def _add(self, entry: Entry, digest: str) -> None:
        head, _, name = entry.path.rpartition("/")
        try:
            parent = self.walk(head or "/", create=True)[1]
        except (_Missing, _Loop):
            parent = None
        if not isinstance(parent, _Dir):
            return  # its parent is a file or a symlink loop: unpacking skips or fails on it
        if entry.op is Op.DIR:
            if not isinstance(parent.children.get(name), _Dir):
                parent.children[name] = _Dir()
            return
        if entry.op is Op.HARDLINK:
            try:
                target = self.walk(entry.target, follow_last=False)[1]
            except (_Missing, _Loop):
                target = None
            if not isinstance(target, Entry):
                self.findings.append(Finding(
                    Kind.HARDLINK_MISSING, Severity.WARN,
                    f"layer {_short(digest)}: hard link {entry.path} points to {entry.target}, "
                    "which is not a file in the layers so far; unpacking fails on it",
                    path=entry.path, layer=digest))
                return
            parent.children[name] = target
            return
        parent.children[name] = entry

    def walk(
        self, path: str, *, follow_last: bool = True, create: bool = False
    ) -> tuple[str, _Dir | Entry]:
        """Resolve *path* as the kernel would with the image as its root: ``(real path, node)``.

        Raises :class:`_Missing` or :class:`_Loop`.  With *create*, missing directories are made
        (a layer member's parents, as unpacking does).
        """
        todo = _components(path)[::-1]
        names: list[str] = []
        dirs: list[_Dir] = [self.root]
        hops = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if len(dirs) > 1:
                    dirs.pop()
                    names.pop()
                continue
            current = dirs[-1]
            child = current.children.get(name)
            if child is None:
                if not create:
                    raise _Missing("/" + "/".join([*names, name]))
                child = current.children[name] = _Dir()
            if isinstance(child, _Dir):
                dirs.append(child)
                names.append(name)
                continue
            if child.op is Op.SYMLINK and (todo or follow_last):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise _Loop("/" + "/".join([*names, name]))
                if child.target.startswith("/"):
                    del dirs[1:], names[:]
                todo.extend(_components(child.target)[::-1])
                continue
            if todo:
                if not create:
                    raise _Missing("/" + "/".join([*names, name, *todo[::-1]]))
                child = current.children[name] = _Dir()
                dirs.append(child)
                names.append(name)
                continue
            return "/" + "/".join([*names, name]), child
        return "/" + "/".join(names), dirs[-1]

    def files(self) -> Iterator[tuple[str, Entry]]:
        """Every regular file of the final filesystem, by path (sorted)."""
        stack = [("", iter(sorted(self.root.children.items())))]
        while stack:
            prefix, items = stack[-1]
            for name, child in items:
                if isinstance(child, _Dir):
                    stack.append((f"{prefix}/{name}", iter(sorted(child.children.items()))))
                    break
                if child.op is Op.FILE:
                    yield f"{prefix}/{name}", child
            else:
                stack.pop()


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


# -- the verdicts -------------------------------------------------------------------------------


#: Layer findings after which the filesystem model lacks part of that layer.
_UNREAD = frozenset((Kind.DIGEST_MISMATCH, Kind.LAYER_UNREADABLE, Kind.ZERO_BYTE_LAYER,
                     Kind.TRUNCATED_STREAM, Kind.CORRUPT_STREAM, Kind.CORRUPT_TAR))
#: Verdicts that rest on something being absent, which an unread layer may have held.
_ABSENCE = frozenset((Kind.ENTRYPOINT_MISSING, Kind.LOADER_MISSING, Kind.SYMLINK_LOOP,
                      Kind.NO_ENTRYPOINT))


class _Stop(Exception):
    """The exec chain cannot be followed further; the finding is already recorded."""


class _Verdict:
    """The checks on one variant's final filesystem."""

    def __init__(
        self, image: str, platform: Platform, config: Mapping[str, Any], fs: _Filesystem,
        host: Platform, allow: tuple[str, ...], unread: tuple[str, ...] = (),
    ) -> None:
        runtime = config.get("config")
        self.image_config = config
        self.config: Mapping[str, Any] = runtime if isinstance(runtime, Mapping) else config
        self.who = f"{platform} variant of {image}"
        self.platform = platform
        self.target: ArchInfo = platform.info
        self.host = host
        self.fs = fs
        self.allow = allow
        self.unread = unread
        self.findings: list[Finding] = []
        self.exec_chain: list[str] = []
        self.elf_counts: Counter[str] = Counter()
        self.host_native: list[str] = []  # foreign ELF files that are for the host's arch

    def run(self) -> list[Finding]:
        self._entrypoint()
        self._other_files()
        self._host_native_only()
        self._config_platform()
        return self.findings

    def _config_platform(self) -> None:
        """The config's os/architecture/variant against the platform the variant is for."""
        arch = self.image_config.get("architecture")
        if not isinstance(arch, str) or not arch:
            return  # a bare runtime config, or one that names nothing
        os_name = str(self.image_config.get("os") or "linux")
        variant = str(self.image_config.get("variant") or "")
        try:
            claimed = Platform.from_parts(os_name, arch, variant)
        except UsageError:
            claimed = Platform(os_name, arch, variant)
        if claimed == self.platform:
            return
        ours = self.elf_counts.get(self.target.name, 0)
        total = sum(self.elf_counts.values())
        theirs = self.elf_counts.get(claimed.arch_name, 0) if claimed.os == "linux" else 0
        if total and ours == total:
            verdict = f"its ELF files ({total}) are all for {self.target.name}: the config lies"
        elif total and theirs == total:
            verdict = f"its ELF files ({total}) are all for {claimed.arch_name}: the index lies"
        else:
            verdict = (f"of its {total} ELF files, {ours} are for {self.platform.arch_name} and "
                       f"{theirs} for {claimed.arch_name}")
        self._add(Kind.CONFIG_MISMATCH, Severity.FAIL,
                  f"{self.who}: its config says {claimed}; {verdict}. `docker run --platform "
                  f"{self.platform}` refuses such an image ('does not match the specified "
                  "platform'); rebuild the variant or fix the index entry")

    def _add(self, kind: Kind, severity: Severity, message: str, path: str = "") -> None:
        if self.unread and kind in _ABSENCE and severity is Severity.FAIL:
            # Something missing from a filesystem we could not read whole proves nothing.
            severity = Severity.INFO
            message += f" (not conclusive: layer {', '.join(self.unread)} could not be read whole)"
        self.findings.append(Finding(kind, severity, message, path))

    # entrypoint ---------------------------------------------------------------------------------

    def _entrypoint(self) -> None:
        argv = _argv(self.config)
        if not argv or not argv[0]:
            self._add(Kind.NO_ENTRYPOINT, Severity.FAIL,
                      f"{self.who}: its config has neither Entrypoint nor Cmd, so there is "
                      "nothing to audit; `docker run` without a command fails with 'no command "
                      "specified'")
            return
        program, args = argv[0], argv[1:]
        origin = via = ""  # once past the entrypoint: what it was, and the hop to the current one
        search_path = True
        try:
            for _ in range(_MAX_SCRIPT_DEPTH + 1):
                where = f" (the interpreter of {origin}, via {via})" if origin else ""
                real, entry = self._locate(program, program + where, search_path=search_path)
                self.exec_chain.append(real)
                shown = (program if real == program else f"{program} (→ {real})") + where
                if entry.shebang is not None and entry.elf is None:
                    interpreter, argument = entry.shebang
                    origin = origin or shown
                    via = f"#!{interpreter}" + (f" {argument}" if argument else "")
                    args = [*([argument] if argument else []), real, *args]
                    program, search_path = interpreter, False
                    continue
                self._executable(entry, shown, real)
                words = _env_command(args) if posixpath.basename(program) == "env" else []
                if not words:
                    return  # an ELF binary of the right machine, with its loader: done
                if not origin:
                    origin, via = shown, f"{program} {' '.join(args)}"
                program, args = words[0], words[1:]
                search_path = True
            self._add(Kind.INTERPRETER_LOOP, Severity.FAIL,
                      f"{self.who}: {origin} starts a chain of more than {_MAX_SCRIPT_DEPTH} #! "
                      "interpreters; this would fail with 'too many levels of symbolic links'",
                      self.exec_chain[0])
        except _Stop:
            return

    def _locate(self, program: str, subject: str, *, search_path: bool) -> tuple[str, Entry]:
        workdir = str(self.config.get("WorkingDir") or "/")
        searching = search_path and "/" not in program
        if searching:
            candidates = [posixpath.join(d or workdir, program) for d in self._path().split(":")]
        else:
            candidates = [posixpath.join(workdir, program)]
        loop = ""
        for candidate in candidates:
            try:
                real, node = self.fs.walk(candidate)
            except _Missing:
                continue
            except _Loop:
                loop = loop or candidate
                continue
            if searching and not (
                isinstance(node, Entry) and node.op is Op.FILE and node.mode & 0o111
            ):
                continue  # PATH search skips what is not an executable file, like LookPath
            return real, self._file(node, subject, real)
        if loop:
            self._add(Kind.SYMLINK_LOOP, Severity.FAIL,
                      f"{self.who}: {subject} resolves through a symbolic link loop at {loop}; "
                      "this would fail with 'too many levels of symbolic links'", loop)
        elif searching:
            self._add(Kind.ENTRYPOINT_MISSING, Severity.FAIL,
                      f"{self.who}: {subject} is not an executable file in any PATH directory "
                      f"({self._path()}); this would fail with 'executable file not found in "
                      "$PATH'", program)
        else:
            self._add(Kind.ENTRYPOINT_MISSING, Severity.FAIL,
                      f"{self.who}: {subject} does not exist in the image; this would fail with "
                      "'no such file or directory'", candidates[0])
        raise _Stop

    def _file(self, node: _Dir | Entry, subject: str, real: str) -> Entry:
        if isinstance(node, Entry) and node.op is Op.FILE:
            if node.mode & 0o111:
                return node
            problem = f"is not executable (mode {node.mode & 0o7777:04o})"
        else:
            problem = "is a directory" if isinstance(node, _Dir) else "is not a regular file"
        self._add(Kind.ENTRYPOINT_NOT_EXECUTABLE, Severity.FAIL,
                  f"{self.who}: {subject} {problem}; this would fail with 'permission denied'",
                  real)
        raise _Stop

    def _executable(self, entry: Entry, shown: str, real: str) -> None:
        header = entry.elf
        if isinstance(header, InvalidElf):
            self._add(Kind.INVALID_ELF, Severity.FAIL,
                      f"{self.who}: {shown} has an {header}; this would fail with exec format "
                      "error", real)
            raise _Stop
        if header is None:
            self._add(Kind.ENTRYPOINT_NOT_EXECUTABLE, Severity.FAIL,
                      f"{self.who}: {shown} is neither an ELF binary nor a #! script; this would "
                      "fail with exec format error", real)
            raise _Stop
        if not header.same_machine(self.target):
            if header.same_machine(self.host.info) and self.host.info != self.target:
                self.host_native.append(real)
            self._add(Kind.ENTRYPOINT_FOREIGN, Severity.FAIL,
                      f"{self.who}: {shown} is {header.description}; this would fail with exec "
                      f"format error on {self.platform.arch_name}", real)
            raise _Stop
        self._float_abi(real, header)
        if header.has_interp:
            self._loader(header, shown, real)

    def _loader(self, header: ElfHeader, shown: str, real: str) -> None:
        if header.interp is None:
            self._add(Kind.LOADER_MISSING, Severity.INFO,
                      f"{self.who}: {shown} names its loader beyond the first "
                      f"{elf.MAX_BYTES // 1024} KiB; the loader was not checked", real)
            return
        try:
            node = self.fs.walk(header.interp)[1]
        except (_Missing, _Loop):
            node = None
        if not (isinstance(node, Entry) and node.op is Op.FILE):
            self._add(Kind.LOADER_MISSING, Severity.FAIL,
                      f"{self.who}: {shown} is dynamically linked and asks for the loader "
                      f"{header.interp}, which is not in the image; this would fail with 'no "
                      "such file or directory'", real)
            raise _Stop

    # everything else ----------------------------------------------------------------------------

    def _other_files(self) -> None:
        chain = set(self.exec_chain)
        for path, entry in self.fs.files():
            header = entry.elf
            if header is None:
                continue
            if isinstance(header, InvalidElf):
                self.elf_counts["invalid"] += 1
                if path not in chain:
                    severity = Severity.INFO if self._allowed(path) else Severity.WARN
                    self._add(Kind.INVALID_ELF, severity,
                              f"{self.who}: {path} has an {header}", path)
                continue
            self.elf_counts[header.arch_key] += 1
            if path in chain:
                continue
            if header.same_machine(self.target):
                if not self._allowed(path):
                    self._float_abi(path, header)
                continue
            if self._allowed(path):
                self._add(Kind.FOREIGN_ELF_ALLOWED, Severity.INFO,
                          f"{self.who}: {path} is {header.description} (allowlisted)", path)
                continue
            if header.same_machine(self.host.info) and self.host.info != self.target:
                self.host_native.append(path)
            self._add(Kind.FOREIGN_ELF, Severity.FAIL,
                      f"{self.who}: {path} is {header.description}, which cannot run on "
                      f"{self.platform.arch_name}; allowlist it if it is there on purpose", path)

    def _float_abi(self, path: str, header: ElfHeader) -> None:
        if header.machine != self.target.elf_machine or header.hard_float is None:
            return
        if self.target.variant == "v7" and header.hard_float is False:
            self._add(Kind.ARM_SOFT_FLOAT, Severity.WARN,
                      f"{self.who}: {path} is {header.description}, an armel (arm/v6) binary in "
                      "an armhf (arm/v7) variant; it was likely built from the wrong packages, "
                      "and dynamically linked it needs the armel loader /lib/ld-linux.so.3", path)
        elif self.target.variant == "v6" and header.hard_float is True:
            self._add(Kind.ARM_HARD_FLOAT, Severity.WARN,
                      f"{self.who}: {path} is {header.description}, an armhf binary in an armel "
                      "(arm/v6) variant; ARM CPUs without a VFP unit cannot run it", path)

    def _host_native_only(self) -> None:
        if not self.host_native:
            return
        count = len(self.host_native)
        examples = ", ".join(self.host_native[:3]) + (" …" if count > 3 else "")
        which = "one of its ELF files" if count == 1 else f"{count} of its ELF files"
        arch = self.platform.arch_name
        self._add(Kind.HOST_NATIVE_ONLY, Severity.FAIL,
                  f"{self.who} is host-native-only suspicious: {which} ({examples}) "
                  f"{'is' if count == 1 else 'are'} {self.host.info.elf_description}, the "
                  f"architecture of this "
                  f"host ({self.host.arch_name}), not {arch}. Tests on this host run them "
                  f"natively and pass, but on a real {arch} machine the image fails with exec "
                  "format error", self.host_native[0])

    def _allowed(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.allow)

    def _path(self) -> str:
        for item in self.config.get("Env") or ():
            if isinstance(item, str) and item.startswith("PATH="):
                return item[5:]
        return DEFAULT_PATH


def _argv(config: Mapping[str, Any]) -> list[str]:
    words: list[str] = []
    for key in ("Entrypoint", "Cmd"):
        value = config.get(key)
        if isinstance(value, str):  # Docker's strslice reads a lone string as one word
            words.append(value)
        elif isinstance(value, list):
            words.extend(str(word) for word in value)
    return words


def _env_command(args: list[str]) -> list[str]:
    """The command ``env ARGS`` runs: options, ``NAME=value`` and ``-S`` splitting skipped."""
    words = list(args)
    while words:
        word = words[0]
        if word == "--":
            return words[1:]
        if word.startswith("-S") or word == "--split-string":
            rest = word[2:] if word.startswith("-S") and len(word) > 2 else " ".join(words[1:2])
            words = rest.split() + words[1 if len(word) > 2 else 2 :]
        elif word in ("-u", "--unset", "-C", "--chdir"):
            words = words[2:]
        elif word.startswith("-") or "=" in word:
            words = words[1:]
        else:
            break
    return words
