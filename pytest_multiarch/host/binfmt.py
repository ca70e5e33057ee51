"""binfmt_misc preflight: can this kernel run a foreign architecture's binaries, and in containers?

A handler is found by what it matches, not by its name: every handler file in
``/proc/sys/fs/binfmt_misc`` is parsed and its magic/mask is tried against an ELF header built
from the platform's row in :data:`pytest_multiarch.platforms.ARCHES`, the way the kernel would.
So ``qemu-aarch64`` from Debian, ``qemu-aarch64`` from tonistiigi/binfmt and a hand-registered
``arm64`` handler are all recognized.

Containers need the ``F`` (fix binary) flag: without it the kernel looks the interpreter up inside
the container's root filesystem at exec time, where it does not exist.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import ArchInfo, Platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# Architectures the host kernel runs without any emulator (32-bit compat mode).
_NATIVE_COMPAT = {"amd64": ("386",)}


class BinfmtState(enum.Enum):
    """Outcome of a preflight; only OK lets a foreign binary run in a container."""

    OK = "ok"
    MISSING = "missing"
    DISABLED = "disabled"
    NO_FIX_BINARY = "no-F-flag"
    INTERPRETER_MISSING = "interpreter-missing"
    NOT_MOUNTED = "binfmt_misc-not-mounted"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered binfmt_misc entry, as its file under ``/proc/sys/fs/binfmt_misc`` reads."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes | None

    @property
    def fix_binary(self) -> bool:
        """The ``F`` flag: the interpreter was opened at registration, so it works in containers."""
        return "F" in self.flags

    def matches(self, header: bytes) -> bool:
        """Whether the kernel would hand a file starting with *header* to this handler."""
        end = self.offset + len(self.magic)
        if len(header) < end:
            return False
        chunk = header[self.offset:end]
        mask = self.mask or b"\xff" * len(self.magic)
        # The kernel's check_file(): (byte ^ magic) & mask must be zero for every byte.
        return all((b ^ m) & k == 0 for b, m, k in zip(chunk, self.magic, mask, strict=True))

    def matches_arch(self, info: ArchInfo) -> bool:
        """Whether this handler runs executables and shared objects of *info*'s architecture."""
        return any(self.matches(elf_header(info, e_type)) for e_type in (2, 3))


@dataclass(frozen=True, slots=True)
class BinfmtStatus:
    """The preflight verdict for one platform: ``state``, and in words ``reason`` and ``fix``."""

    platform: Platform
    state: BinfmtState
    reason: str
    fix: str = ""
    handler: str = ""
    interpreter: str = ""
    native: bool = False

    @property
    def ok(self) -> bool:
        """True when binaries of this platform run here, natively or emulated."""
        return self.state is BinfmtState.OK

    def __str__(self) -> str:
        if self.ok:
            return f"{self.platform.arch_name} ok"
        return f"{self.platform.arch_name} {self.state.value.upper()}"


def elf_header(info: ArchInfo, e_type: int = 2) -> bytes:
    """The first 20 bytes of an ELF file of *info*'s architecture (``e_ident``, type, machine)."""
    ei_class = 2 if info.elf_class == 64 else 1
    ei_data = 1 if info.little_endian else 2
    ident = b"\x7fELF" + bytes((ei_class, ei_data, 1, 0)) + b"\x00" * 8
    order = "<" if info.little_endian else ">"
    return ident + struct.pack(f"{order}HH", e_type, info.elf_machine)


def parse_handler(name: str, text: str) -> Handler | None:
    """Parse one handler file; ``None`` for extension-matching (``E``) entries."""
    enabled = False
    interpreter = flags = ""
    offset = 0
    magic: bytes | None = None
    mask: bytes | None = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "enabled":
            enabled = True
        elif key == "disabled":
            enabled = False
        elif key == "interpreter":
            interpreter = value.strip()
        elif key == "flags:":
            flags = value.strip()
        elif key == "offset":
            offset = int(value)
        elif key == "magic":
            magic = bytes.fromhex(value.strip())
        elif key == "mask":
            mask = bytes.fromhex(value.strip())
        elif key == "extension":
            return None
    if magic is None:
        return None
    return Handler(name, enabled, interpreter, flags, offset, magic, mask)


def handlers(root: Path = BINFMT_DIR) -> list[Handler]:
    """All magic-matching handlers registered under *root* (empty when not mounted)."""
    result: list[Handler] = []
    if not (root / "register").exists():
        return result
    for path in sorted(root.iterdir()):
        if path.name in ("register", "status"):
            continue
        try:
            text = path.read_text()
        except OSError:  # unregistered between listing and reading
            continue
        handler = parse_handler(path.name, text)
        if handler is not None:
            result.append(handler)
    return result


def is_native(platform: Platform, host: Platform | None = None) -> bool:
    """Whether the host kernel runs *platform*'s binaries without an emulator."""
    host = host or Platform.host()
    return platform.arch_name == host.arch_name or platform.arch_name in _NATIVE_COMPAT.get(
        host.arch_name, ()
    )


def _install_fix(info: ArchInfo) -> str:
    return (
        "apt-get install qemu-user-static binfmt-support && "
        f"update-binfmts --enable qemu-{info.qemu}"
    )


def preflight(
    platform: Platform, *, root: Path = BINFMT_DIR, host: Platform | None = None
) -> BinfmtStatus:
    """Whether a container of *platform* can run here; the native arch is always ok."""
    if is_native(platform, host):
        return BinfmtStatus(platform, BinfmtState.OK, "runs natively", native=True)
    info = platform.info
    qemu = f"qemu-{info.qemu}"
    if not (root / "register").exists():
        return BinfmtStatus(
            platform,
            BinfmtState.NOT_MOUNTED,
            f"binfmt_misc is not mounted at {root}, so the kernel cannot hand "
            f"{info.elf_description} binaries to qemu-user",
            f"mount -t binfmt_misc binfmt_misc {root} && update-binfmts --enable {qemu}",
        )
    candidates = [h for h in handlers(root) if h.matches_arch(info)]
    if not candidates:
        return BinfmtStatus(
            platform,
            BinfmtState.MISSING,
            f"no binfmt_misc handler matches {info.elf_description} binaries",
            _install_fix(info),
        )
    # Several handlers may match (two qemu installs); the kernel uses the first enabled one in
    # registration order, which we cannot see, so judge the best one.
    best = min(candidates, key=_rank)
    where = f"binfmt_misc handler {best.name!r} ({best.interpreter})"
    if not best.enabled:
        return BinfmtStatus(
            platform, BinfmtState.DISABLED, f"the {where} is disabled",
            f"echo 1 > {root / best.name}  (or: update-binfmts --enable {best.name})",
            best.name, best.interpreter,
        )
    if not best.fix_binary:
        return BinfmtStatus(
            platform, BinfmtState.NO_FIX_BINARY,
            f"the {where} lacks the F flag (flags {best.flags or 'none'!r}), so containers look "
            "for the interpreter inside their own filesystem and fail",
            f"echo -1 > {root / best.name} && apt-get install --reinstall qemu-user-static && "
            f"update-binfmts --enable {qemu}  (Debian's qemu-user-static registers with F)",
            best.name, best.interpreter,
        )
    if not Path(best.interpreter).exists():
        return BinfmtStatus(
            platform, BinfmtState.INTERPRETER_MISSING,
            f"the {where} points to an interpreter that no longer exists",
            f"apt-get install --reinstall qemu-user-static && update-binfmts --enable {qemu}",
            best.name, best.interpreter,
        )
    return BinfmtStatus(
        platform, BinfmtState.OK, f"emulated through the {where}", "", best.name, best.interpreter
    )


def _rank(handler: Handler) -> tuple[bool, bool, bool]:
    return (not handler.enabled, not handler.fix_binary, not Path(handler.interpreter).exists())


@contextlib.contextmanager
def handler_disabled(platform: Platform, *, root: Path = BINFMT_DIR) -> Iterator[list[str]]:
    """Switch off every enabled handler for *platform* (``echo 0``); always switch them back on.

    For tests that need a real ``exec format error``.  Yields the names switched off.  Needs root.
    """
    info = platform.info
    names = [h.name for h in handlers(root) if h.enabled and h.matches_arch(info)]
    if not names:
        raise MultiarchError(
            f"no enabled binfmt_misc handler for {platform} under {root} to switch off; "
            f"{preflight(platform, root=root).reason}"
        )
    switched: list[str] = []
    try:
        for name in names:
            (root / name).write_text("0")
            switched.append(name)
        yield list(switched)
    finally:
        for name in switched:
            (root / name).write_text("1")


_VERSION_RE = re.compile(r"version\s+(\S+)(.*)$")


def qemu_binary(platform: Platform) -> str:
    """The name of the static qemu-user binary for *platform*, e.g. ``qemu-aarch64-static``."""
    return f"qemu-{platform.info.qemu}-static"


@functools.cache
def qemu_version(platform: Platform) -> str | None:
    """``7.2.17 (Debian 1:7.2+dfsg-7+deb12u18)`` from ``qemu-ARCH-static --version``, or None.

    Asked once per process: the header, the emulation-factor cache key, failed runs and the report
    all want it, and the installed qemu does not change under a running session.
    """
    binary = shutil.which(qemu_binary(platform))
    if binary is None:
        return None
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    match = _VERSION_RE.search(first)
    if match is None:
        return first.strip() or None
    return (match.group(1) + match.group(2)).strip()
