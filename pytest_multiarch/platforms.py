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

#: The PATH Docker (moby's oci defaults) gives a Linux container whose image config sets none:
#: what the audit resolves a bare entrypoint against and what the rootfs runner runs with.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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

#: Variant levels per arch, oldest first; "" is the arch without a variant (its baseline).
LEVELS: dict[str, tuple[str, ...]] = {
    "arm64": ("", *(f"v8.{n}" for n in range(1, 10)), *(f"v9.{n}" for n in range(6))),
    "amd64": ("", "v2", "v3", "v4"),
    "arm": ("v5", "v6", "v7", "v8"),
}
#: Arches whose levels fall back to older ones in matching (see Platform.match_rank).
_ORDERED = ("arm64", "amd64")
_LEVEL_ALIASES = {"arm64": {"v8": "", "v8.0": "", "v9": "v9.0"}, "amd64": {"v1": ""}}
_NO_VARIANT = {"arm64": "v8 (= v8.0 = none)", "amd64": "v1 (= none)", "arm": ""}


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
        """Normalize an (os, architecture, variant) triple as found in an OCI index or config.

        Level variants (arm64 ``v8.0``…``v9.5``, amd64 ``v1``…``v4``, arm ``v5``…``v8``) are
        normalized (``v8``/``v8.0`` → none, ``v9`` → ``v9.0``, amd64 ``v1`` → none); an unknown
        level of such an arch raises :class:`UnknownPlatformError` listing the valid ones.
        """
        arch = architecture.lower()
        var = variant.lower()
        if not var:
            info = arch_info(arch)
            return cls(os_name, info.arch, info.variant)
        info_or_none = _BY_NAME.get(f"{arch}/{var}")
        if info_or_none is not None and info_or_none.arch not in LEVELS:
            return cls(os_name, info_or_none.arch, info_or_none.variant)
        base = info_or_none or arch_info(arch)  # raises for an unknown arch
        levels = LEVELS.get(base.arch)
        if levels is None:
            return cls(os_name, base.arch, var)  # an arch without levels: keep what it says
        canonical = _LEVEL_ALIASES.get(base.arch, {}).get(var, var)
        if canonical not in levels:
            raise UnknownPlatformError(
                f"unknown {base.arch} variant {variant!r}; valid levels: "
                f"{', '.join(level or _NO_VARIANT[base.arch] for level in levels)}"
            )
        return cls(os_name, base.arch, canonical)

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

    @property
    def level(self) -> int:
        """Position of this platform's variant in its arch's level order (0 = the baseline).

        ``-1`` for a variant the order does not know (kept from an index as found).
        """
        levels = LEVELS.get(self.architecture)
        if levels is None:
            return 0 if not self.variant else -1
        return levels.index(self.variant) if self.variant in levels else -1

    @property
    def engine_platform(self) -> str:
        """What to hand a container engine: ``os/arch[/vN]`` without a dotted level.

        Docker 20.10 refuses ``linux/arm64/v8.2`` ("platform specifier component must match
        ^[A-Za-z0-9_-]+$") and older containerd knows no amd64 levels; we run by digest, so the
        engine needs only the arch and we keep the level for ourselves.
        """
        if self.architecture in ("arm64", "amd64"):
            return f"{self.os}/{self.architecture}"
        return str(self)

    def match_rank(self, wanted: Platform) -> int | None:
        """How well an image for this platform serves a request for *wanted*: ``None`` for not
        at all, 0 for an exact match, higher for an older level that still runs there.

        containerd's ordered matching (``platforms.Only``): an ``arm64/v8.2`` request takes a
        ``v8.2`` entry, else ``v8.1``, else ``v8.0`` (plain ``arm64``); ``v9.N`` falls back to
        ``v9.0`` and then to ``v8.(N+5)``; amd64 ``v3`` takes ``v3``, ``v2``, ``v1``.  Unlike
        containerd, arm does not fall back (an ``arm/v7`` request never takes a ``v6`` entry):
        whether an arm/v7 variant is published is what a user asking for arm/v7 wants to know.
        """
        if self.os != wanted.os or self.architecture != wanted.architecture:
            return None
        if self.variant == wanted.variant:
            return 0
        if self.architecture not in _ORDERED or self.level < 0 or wanted.level < 0:
            return None
        order = _fallbacks(wanted)
        return order.index(self.variant) if self.variant in order else None

    def __str__(self) -> str:
        return f"{self.os}/{self.arch_name}"


def _fallbacks(wanted: Platform) -> list[str]:
    """The variants that serve *wanted*, best first (containerd's order)."""
    levels = LEVELS[wanted.architecture]
    if wanted.architecture != "arm64" or not wanted.variant.startswith("v9"):
        return list(reversed(levels[: wanted.level + 1]))
    minor = int(wanted.variant.split(".")[1])
    nines = [f"v9.{n}" for n in range(minor, -1, -1)]
    eights = [f"v8.{n}" for n in range(min(minor + 5, 9), 0, -1)]
    return [*nines, *eights, ""]


def best_match(candidates: Iterable[Platform], wanted: Platform) -> int | None:
    """Index of the candidate that serves *wanted* best (exact first, then containerd's order;
    the first of equals), or ``None``."""
    best: tuple[int, int] | None = None
    for position, plat in enumerate(candidates):
        rank = plat.match_rank(wanted)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, position)
    return None if best is None else best[1]



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
