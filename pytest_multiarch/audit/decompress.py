"""A layer blob's bytes as a decompressed stream: gzip through isal, zstd through zstandard,
plain tar as it is, told apart by their magic bytes (what a runtime does, whatever the media type
says).  The decompressors release the GIL, so layers scan in parallel threads.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "ByteStream",
    "ReadInto",
    "Source",
    "ZstdFrames",
    "compression_of",
    "decompressed",
    "decompression_errors",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ByteStream(Protocol):
    """What an opener yields: a readable binary stream (``readinto`` is used when present)."""

    def read(self, size: int = -1, /) -> bytes | None: ...


class ReadInto(Protocol):
    """What the tar reader reads from: a decompressor, or the source itself."""

    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


def compression_of(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``tar``, from a layer's first bytes."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "tar"


def decompressed(compression: str, source: Source) -> ReadInto:
    """The tar stream inside *source*, read through the fastest decompressor at hand."""
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
            return cast("ReadInto", igzip.open(source, "rb"))  # type: ignore[no-untyped-call]
        reader: ReadInto = raw_reader(source, 512 * 1024)
        return reader
    if compression == "zstd":
        import zstandard

        stream: ReadInto = zstandard.ZstdDecompressor().stream_reader(
            cast("BinaryIO", source), read_size=512 * 1024, read_across_frames=True, closefd=False
        )
        return stream
    return source


def decompression_errors() -> tuple[type[BaseException], ...]:
    """What the decompressors raise on bad content (the stream's own errors are told apart by
    :attr:`Source.error`)."""
    import zstandard

    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error, zstandard.ZstdError]
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
        pass
    else:
        errors.append(cast("type[BaseException]", isal_zlib.error))
    return tuple(errors)


class Source(io.RawIOBase):
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


class ZstdFrames:
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
