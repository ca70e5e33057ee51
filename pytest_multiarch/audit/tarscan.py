"""A streaming tar reader that keeps only what the audit needs of each member.

It reads a decompressed layer into one reusable buffer, records each member as an
:class:`~pytest_multiarch.audit.entries.Entry` (path, type, mode, link target, whiteouts), looks at
the first bytes of each regular file (ELF header and PT_INTERP, or a ``#!`` line) and skips the
rest: a layer is never extracted and never held in memory.  The header fields themselves are
decoded by :mod:`~pytest_multiarch.audit.tarheader`.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import TYPE_CHECKING

from pytest_multiarch.audit import cpulevel, elf, packages
from pytest_multiarch.audit.elf import ElfHeader, InvalidElf
from pytest_multiarch.audit.entries import Entry, Op
from pytest_multiarch.audit.findings import Finding, Kind, Severity, short_digest
from pytest_multiarch.audit.tarheader import (
    TarError,
    TarTruncated,
    check_signed,
    member_name,
    number,
    octal,
    padded,
    parse_pax,
    text,
)
from pytest_multiarch.platforms import EM_ARM

if TYPE_CHECKING:
    from pytest_multiarch.audit.decompress import ReadInto

__all__ = ["TarScanner"]

_BUFFER = 1 << 20  # decompressed bytes per read; the only large allocation of a scan
_MAX_PAX = 256 * 1024  # a pax or GNU long-name record larger than this is not a real archive
_UNSAFE_LISTED = 20  # unsafe member names reported one by one per layer; the rest are counted
_ZERO_BLOCK = bytes(512)
# Sizes come from the header: a negative one (GNU base-256 allows it) would move the read position
# backwards and read the same header forever; 2**63 is what Go's archive/tar accepts.
_MAX_SIZE = (1 << 63) - 1
# tar type flags, as the ints that indexing a header gives
_HARDLINK, _SYMLINK, _DIRECTORY = ord("1"), ord("2"), ord("5")
_PAX, _SOLARIS_PAX, _GLOBAL_PAX = ord("x"), ord("X"), ord("g")
_GNU_LONGNAME, _GNU_LONGLINK = ord("L"), ord("K")
_EXTENSIONS = frozenset((_PAX, _SOLARIS_PAX, _GLOBAL_PAX, _GNU_LONGNAME, _GNU_LONGLINK))
_LINKS = frozenset((_HARDLINK, _SYMLINK))
_NOT_REGULAR = frozenset(b"123456")  # links, devices, directory, fifo


class TarScanner:
    """A streaming tar reader that keeps only what the audit needs of each member."""

    def __init__(self, source: ReadInto, digest: str, *, read_packages: bool = True) -> None:
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
        #: Package databases met on the way (dpkg, apk, rpm): read whole, bounded, parsed.
        self.package_files: list[packages.DbFile] = []
        # A prefix no path has turns the check off without a branch in the hot loop.
        self._db_prefixes = packages.DB_PREFIXES if read_packages else ("\0",)
        # pax and GNU long-name records read, for the member whose header comes next
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._extended = False  # whether any of the three says something

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
                raise TarTruncated(f"the archive ends {size} bytes before the end of the member")
            if n > size:
                self._pos, self._end = size, n
                return
            size -= n

    def _take(self, size: int) -> bytes:
        if size > _MAX_PAX:
            raise TarError(f"an extended header of {size} bytes")
        if self._fill(size) < size:
            raise TarTruncated("the archive ends inside an extended header")
        data = bytes(self._mv[self._pos : self._pos + size])
        self._skip(padded(size))
        return data

    def drain(self) -> None:
        self._pos = self._end
        while not self._eof:
            if not self._read(self._mv):
                self._eof = True

    # members -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Read every member; a bad archive raises :class:`TarError` naming layer and member."""
        try:
            self._members()
        except TarError as exc:
            if exc.layer:
                raise
            raise type(exc)(exc.problem, layer=self._digest, member=self.current,
                            at=self.header_at) from None

    def _members(self) -> None:
        # The hot loop of a scan: one pass per member (a /usr layer has tens of thousands of
        # members; each microsecond here is ~2% of the decompression floor), so the common
        # member, a plain header with no records before it, costs two calls: its header and,
        # if it is a regular file, the file.
        add = self.entries.append
        while header := self._header():
            block, size = header
            typeflag = block[156]
            if typeflag in _EXTENSIONS:
                self._extension(typeflag, size)
                continue
            if self._extended:
                name, link, size, sniff = self._extended_member(block, size)
            else:
                name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
                if block[345] and block[257:263] == b"ustar\x00":  # POSIX ustar prefix field
                    name = f"{text(block[345:500])}/{name}"
                link = text(block[157:257]) if typeflag in _LINKS else ""
                sniff = True
            self.current = name
            if not name or name[0] in "/." or "//" in name or "/." in name:
                path = self._normalized(name)
            else:
                path = "/" + name.rstrip("/")
            skip = (size + 511) & ~511
            if ".wh." in path and self._whiteout(path):
                pass
            elif typeflag not in _NOT_REGULAR:  # POSIX: unknown types read as regular files
                skip -= self._regular(block, path, size, sniff)
            elif typeflag == _DIRECTORY:
                if path != "/":
                    add(Entry(Op.DIR, path))
            elif typeflag == _SYMLINK:
                add(Entry(Op.SYMLINK, path, link))
            elif typeflag == _HARDLINK:
                add(Entry(Op.HARDLINK, path, self._normalized(link)))
            else:
                add(Entry(Op.OTHER, path))
            if skip <= self._end - self._pos:
                self._pos += skip
            else:
                self._skip(skip)

    def _header(self) -> tuple[bytearray, int] | None:
        """The next header block and its member's size, both checked; None at the end."""
        if not self._extended:
            self.header_at, self.current = self.tar_bytes - (self._end - self._pos), ""
        if self._end - self._pos < 512:
            have = self._fill(512)
            if have == 0:
                return None  # EOF at a member boundary without the end marker: tolerated, like Go
            if have < 512:
                raise TarTruncated("the archive ends inside a member header")
        pos = self._pos
        block = self._buf[pos : pos + 512]  # a bytearray copy; no further bytes() copy needed
        self._pos = pos + 512
        if block == _ZERO_BLOCK:
            return None
        # The header checksum is the sum of its bytes (the field itself as spaces).  adler32's
        # low half is 1 + that sum modulo 65521, computed in C: a mismatch there is certain,
        # a match leaves only differences of exact multiples of 65521 undetected.
        try:
            stored = int(block[148:156].strip(b" \0"), 8)
            size = int(block[124:136].strip(b" \0") or b"0", 8)
        except ValueError:  # base-256 (past 8 GiB), or garbage: the careful way
            stored, size = number(block[148:156]), number(block[124:136])
        if (stored + sum(block[148:156]) - 255) % 65521 != zlib.adler32(block) & 0xFFFF:
            check_signed(block, stored)
        if not 0 <= size <= _MAX_SIZE:  # int() reads "-1" in octal too, not only base-256
            self.current = member_name(block)
            raise TarError(f"member size {size} is out of range (0 to 2**63-1)")
        return block, size

    def _extension(self, typeflag: int, size: int) -> None:
        """Read a pax or GNU long-name record: it describes the member whose header follows."""
        if typeflag in (_PAX, _SOLARIS_PAX):
            self._pax = parse_pax(self._take(size))
        elif typeflag == _GNU_LONGNAME:
            self._long_name = text(self._take(size))
        elif typeflag == _GNU_LONGLINK:
            self._long_link = text(self._take(size))
        else:
            self._take(size)  # global pax records: nothing the audit needs
        self._extended = bool(self._pax or self._long_name or self._long_link)

    def _extended_member(self, block: bytearray, size: int) -> tuple[str, str, int, bool]:
        """Name, link target, size and whether to sniff the data of the member that the records
        before its header describe; the records are used up."""
        pax = self._pax
        if "size" in pax and pax["size"].isascii() and pax["size"].isdigit():
            size = int(pax["size"])
            if size > _MAX_SIZE:
                self.current = member_name(block)
                raise TarError(f"pax size {size} is out of range (0 to 2**63-1)")
        name = (self._long_name or pax.get("GNU.sparse.name") or pax.get("path")
                or member_name(block))
        link = self._long_link or pax.get("linkpath") or text(block[157:257])
        sniff = "GNU.sparse.major" not in pax  # its data starts with a sparse map
        self._pax, self._long_name, self._long_link, self._extended = {}, None, None, False
        return name, link, size, sniff

    def _regular(self, block: bytearray, path: str, size: int, sniff: bool) -> int:
        """Record the regular file whose data starts at ``_pos`` (its ELF header or ``#!`` line
        when *sniff* allows; the whole of a package database); return the data bytes consumed."""
        if path.startswith(self._db_prefixes) and packages.is_db_path(path):
            self.entries.append(Entry(Op.FILE, path, "", octal(block[100:108])))
            return self._capture(path, size)
        if self._end - self._pos < 4:
            self._fill(4)
        magic = self._buf[self._pos : self._pos + 4]
        if not (sniff and size > 3 and (magic == elf.ELF_MAGIC or magic[:2] == b"#!")):
            self.entries.append(Entry(Op.FILE, path, "", octal(block[100:108])))
            return 0
        elf_header, shebang = self._sniff(size)
        used = 0
        if isinstance(elf_header, ElfHeader) and elf_header.machine == EM_ARM:
            elf_header, used = self._arm_level(elf_header, size)
        self.entries.append(Entry(Op.FILE, path, "", octal(block[100:108]), elf_header, shebang))
        return used

    def _capture(self, path: str, size: int) -> int:
        """Read the package database at ``_pos`` whole (bounded); return the bytes consumed."""
        if size > packages.MAX_DB_BYTES:
            self.package_files.append(packages.parse_member(path, None, size))
            return 0
        chunks: list[bytes] = []
        left = size
        while left:
            if self._pos == self._end and not self._fill(min(left, _BUFFER)):
                raise TarTruncated(f"the archive ends inside {path}")
            take = min(left, self._end - self._pos)
            chunks.append(bytes(self._mv[self._pos : self._pos + take]))
            self._pos += take
            left -= take
        self.package_files.append(packages.parse_member(path, b"".join(chunks), size))
        return size

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

    def _arm_level(self, header: ElfHeader, size: int) -> tuple[ElfHeader, int]:
        """*header* with the level ``.ARM.attributes`` records, and how many bytes of the member
        that consumed: its section lies near the end, in bytes the stream passes anyway."""
        head = bytes(self._mv[self._pos : self._pos + 52])
        span = cpulevel.arm_window(head, size) if header.elf_class == 32 else None
        if span is None or span[1] - span[0] > _BUFFER:
            return header, 0
        start, end = span
        self._skip(start)
        have = min(self._fill(end - start), end - start)
        level, _ = cpulevel.arm_cpu_level(bytes(self._mv[self._pos : self._pos + have]), start,
                                          head)
        self._skip(have)
        return (replace(header, cpu_level=level) if level else header), start + have

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
                    f"layer {short_digest(self._digest)}: more unsafe member names follow; only "
                    f"the first {_UNSAFE_LISTED} are listed", layer=self._digest))
        return path

    def _unsafe_finding(self, name: str, path: str, escapes: bool) -> Finding:
        layer = short_digest(self._digest)
        if escapes:
            return Finding(Kind.UNSAFE_PATH, Severity.FAIL,
                           f"layer {layer}: member {name!r} climbs out of the root with '..'; "
                           f"Docker refuses to unpack such a layer, others write it at {path} "
                           "(audited as that)", path=path, layer=self._digest)
        return Finding(Kind.UNSAFE_PATH, Severity.WARN,
                       f"layer {layer}: member name {name!r} is absolute; runtimes strip the "
                       f"leading '/' (audited as {path})", path=path, layer=self._digest)
