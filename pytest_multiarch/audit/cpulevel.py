"""Static CPU-level evidence in ELF files: which platform level a binary says it needs.

* 32-bit ARM files record their architecture in the ``.ARM.attributes`` section
  (``Tag_CPU_arch``: Debian's armhf busybox says ``v7``).  The section sits near the end of the
  file, just before the section headers; :func:`arm_window` says which bytes of the member to
  look at, and the layer scanner hands over that window of the stream it decompresses anyway.
* x86 files record ``x86 ISA needed`` in ``.note.gnu.property`` (``PT_GNU_PROPERTY``), right
  after the program headers: :func:`x86_isa_level` reads it from the header bytes.

Both give a variant level in :data:`pytest_multiarch.platforms.LEVELS` terms (``v7``, ``v3`` …);
"" means the file says nothing (or the baseline).
"""

from __future__ import annotations

import struct

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform

SHT_ARM_ATTRIBUTES = 0x70000003
PT_GNU_PROPERTY = 0x6474E553
NT_GNU_PROPERTY_TYPE_0 = 5
GNU_PROPERTY_X86_ISA_1_NEEDED = 0xC0008002
#: Bytes before the section headers in which ``.ARM.attributes`` is looked for.
ARM_WINDOW = 64 * 1024

# Tag_CPU_arch values (ARM IHI 0045) → the arm variant level a CPU must have.  v6T2 uses Thumb-2,
# which ARMv6 cores such as the ARM1176 lack: it needs v7.
_ARM_LEVEL = {0: "v5", 1: "v5", 2: "v5", 3: "v5", 4: "v5", 5: "v5", 6: "v6", 7: "v6", 8: "v7",
              9: "v6", 10: "v7", 11: "v7", 12: "v7", 13: "v7"}
_ARM_NAMES = {3: "v5T", 4: "v5TE", 5: "v5TEJ", 6: "v6", 7: "v6KZ", 8: "v6T2", 9: "v6K",
              10: "v7", 11: "v6-M", 12: "v6S-M", 13: "v7E-M", 14: "v8"}
_X86_LEVEL = ((8, "v4"), (4, "v3"), (2, "v2"))


def arm_window(head: bytes, size: int) -> tuple[int, int] | None:
    """``(start, end)``: the member bytes holding the section headers and the bytes before
    them, from a 32-bit little-endian ARM header; None when there are no section headers."""
    if len(head) < 52:
        return None
    shoff, = struct.unpack_from("<I", head, 32)
    shentsize, shnum = struct.unpack_from("<HH", head, 46)
    end = shoff + shentsize * shnum
    if not shoff or shentsize != 40 or not shnum or end > size:
        return None
    return max(0, shoff - ARM_WINDOW), end


def arm_cpu_level(window: bytes, start: int, head: bytes) -> tuple[str, str]:
    """``(level, Tag_CPU_arch name)`` from the bytes ``window`` (member offset *start*)."""
    shoff, = struct.unpack_from("<I", head, 32)
    shnum, = struct.unpack_from("<H", head, 48)
    for i in range(shnum):
        at = shoff - start + 40 * i
        if at < 0 or at + 40 > len(window):
            return "", ""
        sh_type, = struct.unpack_from("<I", window, at + 4)
        if sh_type != SHT_ARM_ATTRIBUTES:
            continue
        offset, length = struct.unpack_from("<II", window, at + 16)
        data = window[offset - start : offset - start + length]
        if offset < start or len(data) < length:
            return "", ""
        arch = _tag_cpu_arch(data)
        if arch is None:
            return "", ""
        return _ARM_LEVEL.get(arch, "v8"), _ARM_NAMES.get(arch, f"{arch}")
    return "", ""


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, pos


def _tag_cpu_arch(data: bytes) -> int | None:
    """Tag_CPU_arch (6) of the ``aeabi`` File attributes, if recorded."""
    if not data or data[0] != ord("A"):
        return None
    pos = 1
    while pos + 4 <= len(data):
        length, = struct.unpack_from("<I", data, pos)
        section = data[pos + 4 : pos + length]
        pos += max(length, 4)
        vendor, _, body = section.partition(b"\0")
        if vendor != b"aeabi" or len(body) < 5 or body[0] != 1:  # 1 = Tag_File
            continue
        attrs, at = body[5:], 0
        while at < len(attrs):
            tag, at = _uleb(attrs, at)
            if tag in (4, 5, 65, 67):  # NTBS-valued tags
                at = attrs.find(b"\0", at) + 1 or len(attrs)
                continue
            value, at = _uleb(attrs, at)
            if tag == 6:
                return value
            if tag == 32:  # Tag_compatibility: a ULEB then a string
                at = attrs.find(b"\0", at) + 1 or len(attrs)
    return None


def x86_isa_level(buf: bytes, offset: int, size: int, little_endian: bool, is64: bool) -> str:
    """The x86-64 level a ``PT_GNU_PROPERTY`` note (at *offset*, *size* bytes) says is needed."""
    note = buf[offset : offset + size]
    end = "<" if little_endian else ">"
    align = 8 if is64 else 4
    pos = 0
    while pos + 12 <= len(note):
        namesz, descsz, n_type = struct.unpack_from(end + "III", note, pos)
        name_end = pos + 12 + ((namesz + 3) & ~3)
        desc = note[name_end : name_end + descsz]
        pos = name_end + ((descsz + align - 1) & ~(align - 1))
        if n_type != NT_GNU_PROPERTY_TYPE_0:
            continue
        at = 0
        while at + 8 <= len(desc):
            pr_type, pr_size = struct.unpack_from(end + "II", desc, at)
            if pr_type == GNU_PROPERTY_X86_ISA_1_NEEDED and pr_size >= 4:
                bits, = struct.unpack_from(end + "I", desc, at + 8)
                return next((level for bit, level in _X86_LEVEL if bits & bit), "")
            at += 8 + ((pr_size + align - 1) & ~(align - 1))
    return ""


def exceeds(platform: Platform, needed: str) -> bool:
    """Whether a file needing level *needed* cannot run on every *platform* machine."""
    if not needed:
        return False
    try:
        wanted = Platform.from_parts(platform.os, platform.architecture, needed)
    except MultiarchError:
        return False
    return wanted.level > platform.level >= 0
