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
    best_match,
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


def test_match_rank_keeps_the_exact_rules() -> None:
    arm64 = Platform.parse("arm64")
    assert Platform.from_parts("linux", "arm64", "v8").match_rank(arm64) == 0
    assert Platform.from_parts("linux", "arm", "").match_rank(Platform.parse("arm")) == 0
    # arm does not fall back: an arm/v7 request never takes a v6 entry.
    assert Platform.from_parts("linux", "arm", "v6").match_rank(Platform.parse("arm")) is None
    assert Platform.from_parts("linux", "arm", "v6").match_rank(Platform.parse("arm/v6")) == 0
    assert Platform.parse("amd64").match_rank(arm64) is None
    assert Platform.parse("windows/arm64").match_rank(arm64) is None


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


@pytest.mark.parametrize(
    ("text", "expected", "level"),
    [
        ("arm64/v8", "linux/arm64", 0),
        ("arm64/v8.0", "linux/arm64", 0),
        ("arm64/v8.2", "linux/arm64/v8.2", 2),
        ("aarch64/v8.9", "linux/arm64/v8.9", 9),
        ("arm64/v9", "linux/arm64/v9.0", 10),
        ("arm64/v9.5", "linux/arm64/v9.5", 15),
        ("amd64/v1", "linux/amd64", 0),
        ("x86_64/v3", "linux/amd64/v3", 2),
        ("amd64/v4", "linux/amd64/v4", 3),
        ("arm/v5", "linux/arm/v5", 0),
        ("arm/v8", "linux/arm/v8", 3),
    ],
)
def test_levels_parse_and_order(text: str, expected: str, level: int) -> None:
    plat = Platform.parse(text)
    assert str(plat) == expected
    assert plat.level == level


@pytest.mark.parametrize(
    ("bad", "listed"),
    [("arm64/v8.99", "v8.9, v9.0"), ("arm64/v10", "v9.5"), ("amd64/v5", "v4"),
     ("arm/v9", "v5, v6, v7, v8")],
)
def test_unknown_levels_list_the_valid_ones(bad: str, listed: str) -> None:
    with pytest.raises(UnknownPlatformError, match="valid levels: ") as info:
        Platform.parse(bad)
    assert listed in str(info.value)
    assert repr(bad.split("/")[1]) in str(info.value)


def test_engine_gets_a_platform_docker_20_10_accepts() -> None:
    # Docker 20.10: "platform specifier component must match ^[A-Za-z0-9_-]+$".
    assert Platform.parse("arm64/v8.2").engine_platform == "linux/arm64"
    assert Platform.parse("amd64/v3").engine_platform == "linux/amd64"
    assert Platform.parse("arm/v6").engine_platform == "linux/arm/v6"
    assert Platform.parse("s390x").engine_platform == "linux/s390x"


def _pick(entries: list[str], wanted: str) -> str | None:
    plats = [Platform.parse(e) for e in entries]
    found = best_match(plats, Platform.parse(wanted))
    return None if found is None else str(plats[found])


@pytest.mark.parametrize(
    ("entries", "wanted", "picked"),
    [
        # exact first, wherever it is in the index
        (["arm64", "arm64/v8.2"], "arm64/v8.2", "linux/arm64/v8.2"),
        (["arm64/v8.2", "arm64"], "arm64", "linux/arm64"),
        # containerd's order: the newest level not above the one asked for
        (["arm64", "arm64/v8.1"], "arm64/v8.2", "linux/arm64/v8.1"),
        (["arm64/v8.1", "arm64"], "arm64/v8.4", "linux/arm64/v8.1"),
        (["arm64"], "arm64/v8.2", "linux/arm64"),
        (["arm64/v8.2"], "arm64", None),  # a newer level never serves an older machine
        (["arm64/v8.7", "arm64/v9.0"], "arm64/v9.2", "linux/arm64/v9.0"),
        (["arm64/v8.7"], "arm64/v9.2", "linux/arm64/v8.7"),
        (["arm64/v8.8"], "arm64/v9.2", None),  # v9.2 is v8.7 and more, not v8.8
        (["amd64", "amd64/v2"], "amd64/v3", "linux/amd64/v2"),
        (["amd64/v3"], "amd64/v2", None),
        (["arm/v6"], "arm/v7", None),  # kept from before: v6 only when asked
        (["arm/v7", "arm/v6"], "arm/v6", "linux/arm/v6"),
    ],
)
def test_best_match_follows_containerd_ordered_matching(
    entries: list[str], wanted: str, picked: str | None
) -> None:
    assert _pick(entries, wanted) == picked
