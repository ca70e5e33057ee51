"""Executable header reading: which machine an ELF binary is for, which loader it asks for, and
which interpreter a ``#!`` script names.

Works on the first bytes of a file only, so that a layer scan never reads a whole binary.
:data:`HEADER_BYTES` cover the ELF header, the program headers and the ``PT_INTERP`` path of
every ordinary executable (the interpreter string sits right after the program headers, within
the first kilobyte); when a header says it needs more, :attr:`ElfHeader.needed` tells how much and
the caller may parse again with that many bytes (never more than :data:`MAX_BYTES`) — twice at
most: once for program headers that lie further in, once for the PT_INTERP they point at.

A file that starts with the ELF magic but whose header makes no sense gives an
:class:`InvalidElf` naming what is wrong; :func:`parse_elf` never raises on bad content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Literal

from pytest_multiarch import platforms
from pytest_multiarch.audit import cpulevel
from pytest_multiarch.platforms import ArchInfo

ELF_MAGIC = b"\x7fELF"
#: What a scanner reads first from a file that starts with :data:`ELF_MAGIC`.
HEADER_BYTES = 4096
#: The most :attr:`ElfHeader.needed` may ask for; anything further is left unread.
MAX_BYTES = 64 * 1024

ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
PT_DYNAMIC, PT_INTERP = 2, 3
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400

_ET_NAMES = {
    0: "ET_NONE", ET_REL: "ET_REL", ET_EXEC: "ET_EXEC", ET_DYN: "ET_DYN", ET_CORE: "ET_CORE"
}
# Linux refuses longer PT_INTERP strings (PATH_MAX); longer ones only appear in garbage.
_MAX_INTERP = 4096

Linkage = Literal["static", "dynamic", "shared", "unknown"]


@dataclass(frozen=True, slots=True)
class InvalidElf:
    """A file that starts with ``\\x7fELF`` but whose header no kernel would accept."""

    reason: str

    def __str__(self) -> str:
        return f"invalid ELF header: {self.reason}"


@dataclass(frozen=True, slots=True)
class ElfHeader:
    """What the ELF header and program headers of one file say."""

    elf_class: int  # 32 or 64
    little_endian: bool
    e_type: int
    machine: int
    flags: int
    #: The loader named by PT_INTERP, when there is one and it lay within the bytes given.
    interp: str | None = None
    has_interp: bool = False
    has_dynamic: bool = False
    #: Bytes from the start of the file a complete parse needs (program headers, PT_INTERP).
    needed: int = 0
    #: Whether the program headers were within the bytes given (else linkage is unknown).
    complete: bool = True
    #: The platform level the file records it needs (``v7``, ``v3``; "" when it says nothing):
    #: ``.ARM.attributes`` Tag_CPU_arch, x86 ``ISA needed``.  See :mod:`.cpulevel`.
    cpu_level: str = ""

    @property
    def linkage(self) -> Linkage:
        """``dynamic`` (names a loader), ``static``, ``shared`` (a library or static-pie), or
        ``unknown`` (program headers not read)."""
        if self.has_interp:
            return "dynamic"
        if not self.complete:
            return "unknown"
        return "shared" if self.has_dynamic else "static"

    @property
    def type_name(self) -> str:
        """``ET_EXEC``, ``ET_DYN`` … or the number."""
        return _ET_NAMES.get(self.e_type, f"e_type {self.e_type:#x}")

    @property
    def hard_float(self) -> bool | None:
        """For EM_ARM: whether the EABI float flags say hard-float; ``None`` when silent."""
        if self.machine != platforms.EM_ARM:
            return None
        if self.flags & EF_ARM_ABI_FLOAT_HARD:
            return True
        if self.flags & EF_ARM_ABI_FLOAT_SOFT:
            return False
        return None

    @property
    def arm_eabi(self) -> int | None:
        """For EM_ARM: the EABI version (5 for every current toolchain); ``None`` otherwise."""
        if self.machine != platforms.EM_ARM:
            return None
        return (self.flags & EF_ARM_EABIMASK) >> 24

    @property
    def arch(self) -> ArchInfo | None:
        """The alias-table row of this machine, if the table knows it."""
        return platforms.from_elf(
            self.machine, self.elf_class, self.little_endian, hard_float=self.hard_float
        )

    @property
    def arch_key(self) -> str:
        """A short name for counting: ``arm64``, ``arm/v6`` …, else ``e_machine=N/64BE``."""
        info = self.arch
        if info is not None:
            return info.name
        return f"e_machine={self.machine}/{self.elf_class}{'LE' if self.little_endian else 'BE'}"

    @property
    def description(self) -> str:
        """E.g. ``x86-64 (EM_X86_64, 64-bit LE)``, as ``file`` users would recognise it."""
        info = self.arch
        if info is not None:
            if self.machine == platforms.EM_ARM and self.hard_float is None:
                return f"ARM EABI{self.arm_eabi} (EM_ARM, 32-bit LE, float ABI not recorded)"
            return info.elf_description
        endian = "LE" if self.little_endian else "BE"
        return f"an unknown machine (e_machine {self.machine}, {self.elf_class}-bit {endian})"

    def same_machine(self, info: ArchInfo) -> bool:
        """Whether a CPU of *info*'s architecture executes this binary (ignoring float ABI)."""
        return (
            self.machine == info.elf_machine
            and self.elf_class == info.elf_class
            and self.little_endian == info.little_endian
        )


def parse_elf(
    data: bytes | bytearray | memoryview, *, file_size: int | None = None
) -> ElfHeader | InvalidElf | None:
    """Parse the start of a file; ``None`` when it does not begin with the ELF magic.

    *file_size*, when known, tells a header that points past the end of the file (invalid) from
    one that merely needs more bytes than given (see :attr:`ElfHeader.needed`).
    Never raises on bad content: a header no kernel would load gives :class:`InvalidElf`.
    """
    buf = bytes(data[:MAX_BYTES])
    if buf[:4] != ELF_MAGIC:
        return None
    if len(buf) < 7:
        return InvalidElf(f"truncated: {len(buf)} bytes, e_ident alone needs 16")
    ei_class, ei_data, ei_version = buf[4], buf[5], buf[6]
    if ei_class not in (1, 2):
        return InvalidElf(f"EI_CLASS {ei_class:#04x} is neither ELFCLASS32 (1) nor ELFCLASS64 (2)")
    if ei_data not in (1, 2):
        return InvalidElf(f"EI_DATA {ei_data:#04x} is neither LSB (1) nor MSB (2)")
    if ei_version != 1:
        return InvalidElf(f"EI_VERSION {ei_version} is not EV_CURRENT (1)")
    is64 = ei_class == 2
    end = "<" if ei_data == 1 else ">"
    ehsize = 64 if is64 else 52
    if len(buf) < ehsize:
        return InvalidElf(
            f"truncated: {len(buf)} bytes, a {ei_class * 32}-bit header needs {ehsize}"
        )
    if is64:
        (e_type, e_machine, e_version, _entry, e_phoff, _shoff, e_flags, e_ehsize, e_phentsize,
         e_phnum) = struct.unpack_from(end + "HHIQQQIHHH", buf, 16)
    else:
        (e_type, e_machine, e_version, _entry, e_phoff, _shoff, e_flags, e_ehsize, e_phentsize,
         e_phnum) = struct.unpack_from(end + "HHIIIIIHHH", buf, 16)
    if e_version != 1:
        return InvalidElf(f"e_version {e_version} is not EV_CURRENT (1)")
    if not (ET_REL <= e_type <= ET_CORE or e_type >= 0xFE00):
        return InvalidElf(f"e_type {e_type:#x} is not a known object type")
    if e_ehsize != ehsize:
        return InvalidElf(f"e_ehsize {e_ehsize} is not {ehsize} for a {ei_class * 32}-bit ELF")
    phentsize = 56 if is64 else 32
    header = ElfHeader(ei_class * 32, ei_data == 1, e_type, e_machine, e_flags, needed=ehsize)
    if e_phnum == 0:
        return header
    if e_phentsize != phentsize:
        return InvalidElf(
            f"e_phentsize {e_phentsize} is not {phentsize} with {e_phnum} program headers"
        )
    ph_end = e_phoff + e_phnum * phentsize
    if file_size is not None and ph_end > file_size:
        return InvalidElf(f"program headers end at byte {ph_end}, past the file's {file_size}")
    if ph_end > len(buf):
        # Legal but unusual (or more than MAX_BYTES in): the linkage stays unknown.
        return replace(header, needed=ph_end, complete=False)
    parsed = _program_headers(buf, header, end, is64, e_phoff, e_phnum, ph_end)
    if isinstance(parsed, ElfHeader) and file_size is not None and parsed.needed > file_size:
        return InvalidElf(f"PT_INTERP ends at byte {parsed.needed}, past the file's {file_size}")
    return parsed


def _program_headers(
    buf: bytes, header: ElfHeader, end: str, is64: bool, phoff: int, phnum: int, ph_end: int
) -> ElfHeader | InvalidElf:
    has_dynamic = False
    interp_at: tuple[int, int] | None = None
    cpu_level = ""
    for i in range(phnum):
        at = phoff + i * (56 if is64 else 32)
        if is64:
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
                end + "IIQQQQ", buf, at
            )
        else:
            p_type, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIIII", buf, at)
        if p_type == PT_DYNAMIC:
            has_dynamic = True
        elif p_type == PT_INTERP and interp_at is None:
            if not 0 < p_filesz <= _MAX_INTERP:
                return InvalidElf(f"PT_INTERP of {p_filesz} bytes")
            interp_at = (p_offset, p_filesz)
        elif p_type == cpulevel.PT_GNU_PROPERTY and p_offset + p_filesz <= len(buf):
            # Only from the bytes already read: right after the program headers, as ld puts it.
            if header.machine in (platforms.EM_X86_64, platforms.EM_386):
                cpu_level = cpulevel.x86_isa_level(buf, p_offset, p_filesz,
                                                   header.little_endian, is64)
    needed = ph_end
    interp: str | None = None
    if interp_at is not None:
        offset, size = interp_at
        needed = max(needed, offset + size)
        if offset + size <= len(buf):
            raw = buf[offset : offset + size]
            interp = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if not interp:
                return InvalidElf("PT_INTERP names an empty path")
    return replace(
        header,
        interp=interp,
        has_interp=interp_at is not None,
        has_dynamic=has_dynamic,
        needed=needed,
        complete=True,
        cpu_level=cpu_level,
    )


def parse_shebang(data: bytes | bytearray | memoryview) -> tuple[str, str] | None:
    """``(interpreter, argument)`` of a ``#!`` line as Linux reads it, else ``None``.

    The kernel looks at the first 256 bytes, splits interpreter from the rest at the first blank
    and passes the rest, stripped, as one argument.
    """
    head = bytes(data[:256])
    if head[:2] != b"#!":
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t\r")
    if not line:
        return None
    parts = line.replace(b"\t", b" ").split(b" ", 1)
    interpreter = parts[0].decode("utf-8", "surrogateescape")
    argument = parts[1].strip(b" ").decode("utf-8", "surrogateescape") if len(parts) == 2 else ""
    return interpreter, argument
