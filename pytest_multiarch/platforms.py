"""One platform type and one alias table.

Every name an architecture goes by — OCI/Go (``arm64``), uname (``aarch64``), Debian (``ppc64el``),
its ELF identity and its qemu-user binary — lives in :data:`ARCHES`, and nowhere else.
Normalization follows containerd's ``platforms.Normalize`` (aarch64→arm64 dropping ``v8``,
armhf→arm/v7, bare arm→arm/v7) and adds the dpkg/uname names it does not know.
"""

from __future__ import annotations

import platform as _stdlib_platform
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_multiarch.errors import UnknownPlatformError

# ELF e_machine values (elf.h).
EM_386 = 3
EM_MIPS = 8
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258


@dataclass(frozen=True, slots=True)
class ArchInfo:
    """Everything one architecture is called, and how its binaries look."""

    arch: str  # OCI/Go GOARCH
    variant: str  # canonical OCI variant ("" when none)
    uname: str  # what `uname -m` prints on such a machine
    dpkg: str  # Debian's architecture name
    elf_machine: int
    elf_class: int  # 32 or 64
    little_endian: bool
    qemu: str  # qemu-user suffix: qemu-<qemu>-static, binfmt handler qemu-<qemu>
    elf_name: str  # how people name the ELF machine, for messages
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Canonical short name, ``arch`` or ``arch/variant``."""
        return f"{self.arch}/{self.variant}" if self.variant else self.arch

    @property
    def elf_description(self) -> str:
        """E.g. ``x86-64 (EM_X86_64, 64-bit LE)``."""
        endian = "LE" if self.little_endian else "BE"
        return f"{self.elf_name} ({_EM_NAMES[self.elf_machine]}, {self.elf_class}-bit {endian})"


_EM_NAMES = {
    EM_386: "EM_386",
    EM_MIPS: "EM_MIPS",
    EM_PPC64: "EM_PPC64",
    EM_S390: "EM_S390",
    EM_ARM: "EM_ARM",
    EM_X86_64: "EM_X86_64",
    EM_AARCH64: "EM_AARCH64",
    EM_RISCV: "EM_RISCV",
    EM_LOONGARCH: "EM_LOONGARCH",
}

#: The one alias table.  Order matters only for listing valid names in messages.
ARCHES: tuple[ArchInfo, ...] = (
    ArchInfo("amd64", "", "x86_64", "amd64", EM_X86_64, 64, True, "x86_64", "x86-64",
             ("x86_64", "x86-64", "x64", "amd64/v1")),
    ArchInfo("arm64", "", "aarch64", "arm64", EM_AARCH64, 64, True, "aarch64", "AArch64",
             ("aarch64", "arm64/v8", "aarch64/v8", "armv8", "armv8l64")),
    ArchInfo("arm", "v7", "armv7l", "armhf", EM_ARM, 32, True, "arm", "ARM EABI5 hard-float",
             ("arm", "armhf", "armv7", "armv7l", "armv7hl", "arm32v7", "armel/v7")),
    ArchInfo("arm", "v6", "armv6l", "armel", EM_ARM, 32, True, "arm", "ARM EABI5 soft-float",
             ("armel", "armv6", "armv6l", "arm32v6")),
    ArchInfo("386", "", "i686", "i386", EM_386, 32, True, "i386", "Intel 80386",
             ("i386", "i486", "i586", "i686", "x86", "ia32")),
    ArchInfo("ppc64le", "", "ppc64le", "ppc64el", EM_PPC64, 64, True, "ppc64le",
             "64-bit PowerPC LE", ("ppc64el", "powerpc64le")),
    ArchInfo("s390x", "", "s390x", "s390x", EM_S390, 64, False, "s390x", "IBM S/390",
             ("s390", "systemz", "zarch")),
    ArchInfo("riscv64", "", "riscv64", "riscv64", EM_RISCV, 64, True, "riscv64", "RISC-V",
             ("riscv", "rv64", "rv64gc")),
    ArchInfo("mips64le", "", "mips64", "mips64el", EM_MIPS, 64, True, "mips64el", "MIPS64 LE",
             ("mips64el",)),
    ArchInfo("loong64", "", "loongarch64", "loong64", EM_LOONGARCH, 64, True, "loongarch64",
             "LoongArch", ("loongarch64", "la64")),
)


def _build_index() -> dict[str, ArchInfo]:
    index: dict[str, ArchInfo] = {}
    for info in ARCHES:
        for key in (info.name, info.uname, info.dpkg, *info.aliases):
            # The first entry to claim a name wins (arm/v7 gets "arm", not arm/v6).
            index.setdefault(key.lower(), info)
    # uname on arm64 boxes running a 32-bit userland prints armv8l: that runs arm/v7 binaries.
    index.setdefault("armv8l", index["arm/v7"])
    return index


_BY_NAME = _build_index()
_KNOWN_OSES = ("linux", "windows", "freebsd", "darwin", "unknown")


def valid_names() -> list[str]:
    """Canonical architecture names, for help texts and error messages."""
    return [info.name for info in ARCHES]


def arch_info(name: str) -> ArchInfo:
    """Look up an architecture by any of its names; raise :class:`UnknownPlatformError`."""
    info = _BY_NAME.get(name.strip().lower())
    if info is None:
        raise UnknownPlatformError(
            f"unknown architecture {name!r}; valid names: {', '.join(valid_names())} "
            "(aliases such as aarch64, x86_64, armhf, ppc64el are accepted too)"
        )
    return info


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """An OCI platform: ``os/architecture[/variant]``, normalized the way containerd does."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``arm64``, ``linux/arm64/v8``, ``aarch64``, ``armhf``, ``linux/arm`` …

        The OS defaults to ``linux``.  Raises :class:`UnknownPlatformError` naming the bad part.
        """
        raw = text.strip()
        if not raw:
            raise UnknownPlatformError(
                f"empty platform name; valid names: {', '.join(valid_names())}"
            )
        parts = raw.lower().split("/")
        os_name = "linux"
        if parts[0] in _KNOWN_OSES:
            os_name, parts = parts[0], parts[1:]
            if not parts:
                raise UnknownPlatformError(
                    f"platform {text!r} names an OS but no architecture part"
                )
        if len(parts) > 2:
            raise UnknownPlatformError(f"platform {text!r} has too many parts (os/arch/variant)")
        return cls.from_parts(os_name, parts[0], parts[1] if len(parts) == 2 else "")

    @classmethod
    def from_parts(cls, os_name: str, architecture: str, variant: str = "") -> Platform:
        """Normalize an (os, architecture, variant) triple as found in an OCI index or config."""
        arch = architecture.lower()
        var = variant.lower()
        if var:
            info = _BY_NAME.get(f"{arch}/{var}")
            if info is None:
                base = arch_info(arch)  # raises for an unknown arch
                if base.arch == "arm64" and var in ("v8", "v8.0"):
                    info = base
                elif base.arch == "arm" and var in ("v5", "v6", "v7", "v8"):
                    # Keep an explicit ARM variant we have no row for (v5, v8) rather than lose it.
                    return cls(os_name, "arm", var)
                else:
                    return cls(os_name, base.arch, var)
        else:
            info = arch_info(arch)
        return cls(os_name, info.arch, info.variant)

    @classmethod
    def host(cls) -> Platform:
        """The platform of the machine we run on, from ``uname -m``."""
        return cls.parse(_stdlib_platform.machine())

    @property
    def arch_name(self) -> str:
        """``arm64`` or ``arm/v7``: the name used in test ids and reports."""
        return f"{self.architecture}/{self.variant}" if self.variant else self.architecture

    @property
    def info(self) -> ArchInfo:
        """The alias-table row of this platform's architecture."""
        return _BY_NAME.get(self.arch_name) or arch_info(self.architecture)

    def satisfies(self, wanted: Platform) -> bool:
        """Whether an image for this platform is what a user asking for *wanted* meant.

        Both sides are normalized, so ``arm64/v8`` satisfies ``arm64`` and an ``arm`` entry with no
        variant satisfies ``arm/v7``.  A v6 image does not satisfy ``arm`` (v7): v6 is accepted
        only when asked for.
        """
        return self == wanted

    def __str__(self) -> str:
        return f"{self.os}/{self.arch_name}"


def parse_arch_list(
    value: str | Iterable[str], *, native: Platform | None = None
) -> list[Platform]:
    """Parse a comma-separated list (``arm64,s390x``); aliases collapse; ``native`` is the host.

    Raises :class:`UnknownPlatformError` for an unknown name or an empty list.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    result: list[Platform] = []
    for item in items:
        name = item.strip()
        if not name:
            continue
        plat = (native or Platform.host()) if name.lower() == "native" else Platform.parse(name)
        if plat not in result:
            result.append(plat)
    if not result:
        raise UnknownPlatformError(
            f"no architecture given; valid names: native, {', '.join(valid_names())}"
        )
    return result


def from_elf(machine: int, elf_class: int, little_endian: bool, *, hard_float: bool | None = None
             ) -> ArchInfo | None:
    """The alias-table row whose binaries look like this ELF header, if any.

    For EM_ARM, *hard_float* tells arm/v7 (armhf) from arm/v6 (armel); ``None`` means unknown,
    which picks arm/v7.
    """
    candidates = [
        info for info in ARCHES
        if info.elf_machine == machine and info.elf_class == elf_class
        and info.little_endian == little_endian
    ]
    if machine == EM_ARM and hard_float is False:
        candidates = [c for c in candidates if c.variant == "v6"] or candidates
    return candidates[0] if candidates else None
