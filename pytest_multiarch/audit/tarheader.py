"""One tar header block, decoded: its number and name fields, its checksum, pax records, and the
errors a bad archive raises.

Pure functions of the header's bytes (like Go's ``archive/tar/strconv.go``), apart from the
streaming reader in :mod:`~pytest_multiarch.audit.tarscan`, which adds the layer, member and
offset to the errors raised here.
"""

from __future__ import annotations

import struct

from pytest_multiarch.audit.findings import short_digest
from pytest_multiarch.errors import CorruptLayer

__all__ = ["TarError", "TarTruncated"]


class TarError(CorruptLayer):
    """The tar stream is not a valid archive.

    Raised by :meth:`~pytest_multiarch.audit.tarscan.TarScanner.run` with the layer's digest, the
    member and the byte offset of its header, so the message alone says where to look.
    """

    def __init__(self, problem: str, *, layer: str = "", member: str = "",
                 at: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.layer, self.member, self.at = problem, layer, member, at

    def __str__(self) -> str:
        if not self.layer:
            return self.problem
        where = f"the header at byte {self.at} of the tar"
        where += f", member {self.member!r}" if self.member else ""
        return f"layer {short_digest(self.layer)}: corrupt tar: {self.problem} ({where})"


class TarTruncated(TarError):
    """The tar stream ends inside a header or a member."""


def padded(size: int) -> int:
    """*size* rounded up to whole 512-byte blocks, as the member's data is stored."""
    return (size + 511) & ~511


def text(raw: bytes | bytearray) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def member_name(block: bytes | bytearray) -> str:
    name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
    # POSIX ustar has a prefix field (GNU uses that space for other things)
    if block[345] and block[257:263] == b"ustar\x00":
        return f"{text(block[345:500])}/{name}"
    return name


def octal(raw: bytes | bytearray) -> int:
    try:
        return int(raw.strip(b" \0") or b"0", 8)
    except ValueError:
        return number(raw)


def number(raw: bytes | bytearray) -> int:
    if raw[:1] and raw[0] & 0x80:  # GNU base-256, for sizes past 8 GiB
        if raw[0] == 0xFF:
            return int.from_bytes(raw, "big", signed=True)
        return int.from_bytes(raw[1:], "big")
    digits = raw.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarError(f"bad number field {raw!r} in a header") from None


def check_signed(block: bytes | bytearray, stored: int) -> None:
    """The exact check, with the signed sum some old tars wrote; raises unless one matches."""
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored not in (unsigned, 256 + sum(struct.unpack_from("148b8x356b", block))):
        raise TarError(f"header checksum {stored} does not match {unsigned}: not a tar header")


def parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.find(b" ", pos)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        if length <= space - pos or pos + length > len(data):
            raise TarError("a malformed pax extended header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[text(key)] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records
