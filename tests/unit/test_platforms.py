from __future__ import annotations

import pytest

from pytest_multiarch.errors import UnknownPlatformError
from pytest_multiarch.platforms import (
    ARCHES,
    EM_AARCH64,
    EM_ARM,
    EM_S390,
    EM_X86_64,
    Platform,
    arch_info,
    from_elf,
    parse_arch_list,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # containerd's normalization
        ("aarch64", "linux/arm64"),
        ("arm64/v8", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("armhf", "linux/arm/v7"),
        ("arm", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("armel", "linux/arm/v6"),
        ("x86_64", "linux/amd64"),
        ("x86-64", "linux/amd64"),
        ("i386", "linux/386"),
        ("i686", "linux/386"),
        # the uname / dpkg names it misses
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("ppc64el", "linux/ppc64le"),
        ("mips64el", "linux/mips64le"),
        ("loongarch64", "linux/loong64"),
        ("riscv64", "linux/riscv64"),
        ("s390x", "linux/s390x"),
        ("LINUX/ARM64", "linux/arm64"),
        ("windows/amd64", "windows/amd64"),
        ("linux/arm/v5", "linux/arm/v5"),
    ],
)
def test_parse_normalizes_like_containerd_and_beyond(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("bad", ["", "sparc", "linux", "linux/arm64/v8/x", "linux/vax"])
def test_unknown_names_are_clear_errors(bad: str) -> None:
    with pytest.raises(UnknownPlatformError) as info:
        Platform.parse(bad)
    assert "valid names" in str(info.value) or "part" in str(info.value)


def test_index_entry_normalization() -> None:
    assert Platform.from_parts("linux", "arm64", "v8") == Platform.parse("arm64")
    assert Platform.from_parts("linux", "arm", "") == Platform.parse("arm/v7")
    assert Platform.from_parts("linux", "arm", "v6") != Platform.parse("arm")


def test_satisfies_variant_rules() -> None:
    arm64 = Platform.parse("arm64")
    assert Platform.from_parts("linux", "arm64", "v8").satisfies(arm64)
    assert Platform.from_parts("linux", "arm", "").satisfies(Platform.parse("arm"))
    assert not Platform.from_parts("linux", "arm", "v6").satisfies(Platform.parse("arm"))
    assert Platform.from_parts("linux", "arm", "v6").satisfies(Platform.parse("arm/v6"))
    assert not Platform.parse("amd64").satisfies(arm64)


def test_arch_list_dedupes_aliases_and_keeps_order() -> None:
    got = parse_arch_list("aarch64, s390x,arm64,arm64/v8", native=Platform.parse("amd64"))
    assert [p.arch_name for p in got] == ["arm64", "s390x"]
    ppc = Platform.parse("ppc64le")
    assert parse_arch_list("native", native=ppc) == [ppc]
    with pytest.raises(UnknownPlatformError, match="no architecture given"):
        parse_arch_list(" , ")


def test_one_table_has_every_required_arch_with_all_its_names() -> None:
    names = {info.name for info in ARCHES}
    assert {"amd64", "arm64", "arm/v7", "arm/v6", "386", "ppc64le", "s390x", "riscv64",
            "mips64le", "loong64"} <= names
    for info in ARCHES:
        assert arch_info(info.uname) is not None
        assert arch_info(info.dpkg) is not None
        assert info.qemu
        assert info.elf_machine
        assert info.elf_class in (32, 64)


def test_elf_identity_maps_back() -> None:
    assert from_elf(EM_X86_64, 64, True).name == "amd64"  # type: ignore[union-attr]
    assert from_elf(EM_AARCH64, 64, True).name == "arm64"  # type: ignore[union-attr]
    assert from_elf(EM_S390, 64, False).name == "s390x"  # type: ignore[union-attr]
    assert from_elf(EM_ARM, 32, True, hard_float=False).name == "arm/v6"  # type: ignore[union-attr]
    assert from_elf(EM_ARM, 32, True, hard_float=True).name == "arm/v7"  # type: ignore[union-attr]
    assert from_elf(EM_S390, 64, True) is None
    assert Platform.parse("arm64").info.elf_description == "AArch64 (EM_AARCH64, 64-bit LE)"
