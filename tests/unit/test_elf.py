"""ELF header reading, on real Debian binaries of several architectures and on garbage."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from pytest_multiarch.audit import elf
from pytest_multiarch.audit.elf import ElfHeader, InvalidElf, parse_elf, parse_shebang
from pytest_multiarch.platforms import arch_info


def head(path: Path, size: int = elf.HEADER_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def parsed(path: Path, size: int = elf.HEADER_BYTES) -> ElfHeader:
    header = parse_elf(head(path, size), file_size=path.stat().st_size)
    assert isinstance(header, ElfHeader), header
    return header


@pytest.mark.parametrize(
    ("dpkg_arch", "arch_name", "description"),
    [
        ("arm64", "arm64", "AArch64 (EM_AARCH64, 64-bit LE)"),
        ("s390x", "s390x", "IBM S/390 (EM_S390, 64-bit BE)"),
        ("ppc64el", "ppc64le", "64-bit PowerPC LE (EM_PPC64, 64-bit LE)"),
        ("armhf", "arm/v7", "ARM EABI5 hard-float (EM_ARM, 32-bit LE)"),
        ("armel", "arm/v6", "ARM EABI5 soft-float (EM_ARM, 32-bit LE)"),
    ],
)
def test_static_busybox_of_each_arch(
    debian_binaries: dict[tuple[str, str], Path], dpkg_arch: str, arch_name: str, description: str
) -> None:
    header = parsed(debian_binaries["busybox-static", dpkg_arch])
    assert header.arch == arch_info(arch_name)
    assert header.arch_key == arch_name
    assert header.description == description
    assert header.linkage == "static"
    assert header.interp is None
    assert header.type_name == "ET_EXEC"
    assert header.same_machine(arch_info(arch_name))
    assert not header.same_machine(arch_info("amd64"))


def test_arm_float_abi_and_eabi_version(debian_binaries: dict[tuple[str, str], Path]) -> None:
    hard = parsed(debian_binaries["busybox-static", "armhf"])
    soft = parsed(debian_binaries["busybox-static", "armel"])
    assert hard.flags & elf.EF_ARM_ABI_FLOAT_HARD
    assert hard.hard_float is True
    assert soft.flags & elf.EF_ARM_ABI_FLOAT_SOFT
    assert soft.hard_float is False
    assert hard.arm_eabi == soft.arm_eabi == 5
    # Same machine: an armhf CPU executes both; the float ABI is what tells them apart.
    assert soft.same_machine(arch_info("arm/v7"))
    assert hard.same_machine(arch_info("arm/v6"))
    assert parsed(debian_binaries["busybox-static", "arm64"]).hard_float is None


def test_dynamic_foreign_binary_names_its_loader(
    debian_binaries: dict[tuple[str, str], Path],
) -> None:
    header = parsed(debian_binaries["hello", "arm64"])
    assert header.arch_key == "arm64"
    assert header.linkage == "dynamic"
    assert header.interp == "/lib/ld-linux-aarch64.so.1"


def test_host_ls_is_a_dynamic_x86_64_pie() -> None:
    header = parsed(Path("/bin/ls"))
    assert header.arch_key == "amd64"
    assert header.description == "x86-64 (EM_X86_64, 64-bit LE)"
    assert header.type_name == "ET_DYN"  # PIE
    assert header.linkage == "dynamic"
    assert header.interp == "/lib64/ld-linux-x86-64.so.2"
    assert header.needed < 4096  # what HEADER_BYTES promises for ordinary executables


def test_a_shared_library_is_neither_static_nor_dynamic() -> None:
    libc = Path("/usr/lib/x86_64-linux-gnu/libm.so.6")
    if not libc.exists():
        pytest.skip("no /usr/lib/x86_64-linux-gnu/libm.so.6 here")
    header = parsed(libc)
    assert header.linkage == "shared"
    assert header.interp is None


def test_too_few_bytes_for_pt_interp_asks_for_more() -> None:
    full = parsed(Path("/bin/ls"))
    short = parse_elf(head(Path("/bin/ls"), 200))
    assert isinstance(short, ElfHeader)
    assert short.linkage == "unknown"
    assert short.interp is None
    assert short.needed > 200
    # Program headers first, then the PT_INTERP they point at: at most two more rounds.
    again = parse_elf(head(Path("/bin/ls"), short.needed))
    assert isinstance(again, ElfHeader)
    assert again.has_interp
    assert again.interp is None
    assert again.needed > short.needed
    assert parse_elf(head(Path("/bin/ls"), again.needed)) == full


def test_not_elf_is_none() -> None:
    assert parse_elf(b"") is None
    assert parse_elf(b"\x7fEL") is None
    assert parse_elf(b"#!/bin/sh\n") is None
    assert parse_elf(b"MZ\x90\x00" + bytes(100)) is None


def _ident(cls: int = 2, data: int = 1, version: int = 1) -> bytes:
    return b"\x7fELF" + bytes([cls, data, version]) + bytes(9)


def _header64(**fields: int) -> bytes:
    values = {"e_type": 2, "e_machine": 62, "e_version": 1, "e_phoff": 64, "e_flags": 0,
              "e_ehsize": 64, "e_phentsize": 56, "e_phnum": 0}
    values.update(fields)
    return _ident() + struct.pack(
        "<HHIQQQIHHHHHH", values["e_type"], values["e_machine"], values["e_version"], 0,
        values["e_phoff"], 0, values["e_flags"], values["e_ehsize"], values["e_phentsize"],
        values["e_phnum"], 0, 0, 0,
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x7fELF", "truncated"),
        (_ident(cls=3) + bytes(48), "EI_CLASS"),
        (_ident(data=0) + bytes(48), "EI_DATA"),
        (_ident(version=7) + bytes(48), "EI_VERSION"),
        (_ident() + bytes(10), "truncated"),
        (_header64(e_version=2), "e_version"),
        (_header64(e_type=0x77), "e_type"),
        (_header64(e_ehsize=40), "e_ehsize"),
        (_header64(e_phnum=3, e_phentsize=12), "e_phentsize"),
        (_header64(e_phnum=1) + struct.pack("<IIQQQQQQ", 3, 0, 0, 0, 0, 1 << 40, 0, 0),
         "PT_INTERP of"),
    ],
)
def test_garbage_after_the_magic_is_an_invalid_header(data: bytes, reason: str) -> None:
    result = parse_elf(data)
    assert isinstance(result, InvalidElf)
    assert str(result).startswith("invalid ELF header: ")
    assert reason in result.reason


def test_program_headers_past_the_end_of_the_file_are_invalid() -> None:
    data = _header64(e_phnum=4, e_phoff=10_000)
    assert isinstance(parse_elf(data, file_size=len(data)), InvalidElf)
    unknown = parse_elf(data)  # without the size it may just need more bytes
    assert isinstance(unknown, ElfHeader)
    assert unknown.linkage == "unknown"


def test_unknown_machine_is_described_not_rejected() -> None:
    header = parse_elf(_header64(e_machine=0x1234))
    assert isinstance(header, ElfHeader)
    assert header.arch is None
    assert header.arch_key == "e_machine=4660/64LE"
    assert "unknown machine (e_machine 4660, 64-bit LE)" in header.description


def test_random_garbage_never_raises() -> None:
    rng = random.Random(4)
    real = head(Path("/bin/ls"))
    for _ in range(3000):
        size = rng.randrange(4, 2048)
        if rng.random() < 0.5:
            data = bytearray(real[:size])
            for _ in range(rng.randrange(1, 12)):
                data[rng.randrange(4, len(data))] = rng.randrange(256)
        else:
            data = bytearray(b"\x7fELF" + rng.randbytes(size))
        result = parse_elf(bytes(data), file_size=rng.choice([None, size, 1 << 20]))
        assert isinstance(result, ElfHeader | InvalidElf)
        if isinstance(result, ElfHeader):
            assert result.description  # every property works on what parsed


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"#!/bin/sh\necho", ("/bin/sh", "")),
        (b"#! /usr/bin/env python3 -u\n", ("/usr/bin/env", "python3 -u")),
        (b"#!/usr/bin/env -S perl -w\r\n", ("/usr/bin/env", "-S perl -w")),
        (b"#!\t/bin/bash\t-e\n", ("/bin/bash", "-e")),
        (b"#!\n", None),
        (b"#/bin/sh\n", None),
    ],
)
def test_shebang(line: bytes, expected: tuple[str, str] | None) -> None:
    assert parse_shebang(line) == expected
