"""binfmt_misc preflight: handler files as Debian's qemu-user-static registers them (copied from
/proc/sys/fs/binfmt_misc on the test bed), and the live /proc entries of this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_multiarch.host import binfmt
from pytest_multiarch.host.binfmt import BinfmtState, parse_handler, preflight
from pytest_multiarch.platforms import ARCHES, Platform, arch_info

# Verbatim from /proc/sys/fs/binfmt_misc on a Debian 12 host with qemu-user-static 7.2.
REAL = {
    "qemu-aarch64": """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
""",
    "qemu-arm": """enabled
interpreter /usr/libexec/qemu-binfmt/arm-binfmt-P
flags: PF
offset 0
magic 7f454c4601010100000000000000000002002800
mask ffffffffffffff00fffffffffffffffffeffffff
""",
    "qemu-armeb": """enabled
interpreter /usr/libexec/qemu-binfmt/armeb-binfmt-P
flags: PF
offset 0
magic 7f454c4601020100000000000000000000020028
mask ffffffffffffff00fffffffffffffffffffeffff
""",
    "qemu-s390x": """enabled
interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P
flags: PF
offset 0
magic 7f454c4602020100000000000000000000020016
mask fffffffffffffffcfffffffffffffffffffeffff
""",
    "qemu-ppc64le": """enabled
interpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P
flags: PF
offset 0
magic 7f454c4602010100000000000000000002001500
mask fffffffffffffffcfffffffffffffffffeffff00
""",
    "python3.11": """enabled
interpreter /usr/bin/python3.11
flags:
offset 0
magic a70d0d0a
""",
}

AMD64 = Platform.parse("amd64")


def make_dir(tmp_path: Path, entries: dict[str, str], interpreter: Path | None = None) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir()
    (root / "register").write_text("")
    (root / "status").write_text("enabled\n")
    for name, text in entries.items():
        if interpreter is not None:
            text = "\n".join(
                f"interpreter {interpreter}" if line.startswith("interpreter ") else line
                for line in text.splitlines()
            )
        (root / name).write_text(text)
    return root


@pytest.fixture
def interp(tmp_path: Path) -> Path:
    path = tmp_path / "qemu-static"
    path.write_text("")
    return path


def test_parse_real_handler() -> None:
    handler = parse_handler("qemu-aarch64", REAL["qemu-aarch64"])
    assert handler is not None
    assert handler.enabled
    assert handler.fix_binary
    assert handler.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert handler.magic[:4] == b"\x7fELF"
    assert handler.mask is not None
    assert len(handler.mask) == len(handler.magic)


def test_extension_handlers_are_ignored() -> None:
    assert parse_handler("exe", "enabled\ninterpreter /x\nflags: \nextension .exe\n") is None


@pytest.mark.parametrize(
    ("handler", "name"),
    [("qemu-aarch64", "arm64"), ("qemu-arm", "arm/v7"), ("qemu-arm", "arm/v6"),
     ("qemu-s390x", "s390x"), ("qemu-ppc64le", "ppc64le")],
)
def test_each_real_handler_matches_exactly_its_arch(handler: str, name: str) -> None:
    parsed = parse_handler(handler, REAL[handler])
    assert parsed is not None
    matching = {info.name for info in ARCHES if parsed.matches_arch(info)}
    expected = {"arm/v7", "arm/v6"} if handler == "qemu-arm" else {name}
    assert matching == expected


def test_big_endian_arm_handler_does_not_claim_armhf() -> None:
    parsed = parse_handler("qemu-armeb", REAL["qemu-armeb"])
    assert parsed is not None
    assert not parsed.matches_arch(arch_info("arm/v7"))


def test_ok_found_by_magic_not_by_name(tmp_path: Path, interp: Path) -> None:
    root = make_dir(tmp_path, {"my-arm64-emulator": REAL["qemu-aarch64"]}, interp)
    status = preflight(Platform.parse("arm64"), root=root, host=AMD64)
    assert status.ok
    assert status.state is BinfmtState.OK
    assert status.handler == "my-arm64-emulator"
    assert str(status) == "arm64 ok"


def test_native_is_always_ok_even_without_binfmt(tmp_path: Path) -> None:
    status = preflight(AMD64, root=tmp_path / "absent", host=AMD64)
    assert status.ok
    assert status.native
    assert preflight(Platform.parse("386"), root=tmp_path / "absent", host=AMD64).ok


def test_not_mounted(tmp_path: Path) -> None:
    status = preflight(Platform.parse("s390x"), root=tmp_path / "absent", host=AMD64)
    assert status.state is BinfmtState.NOT_MOUNTED
    assert "mount -t binfmt_misc" in status.fix
    assert str(status) == "s390x BINFMT_MISC-NOT-MOUNTED"


def test_missing_names_the_install_command(tmp_path: Path, interp: Path) -> None:
    root = make_dir(tmp_path, {"qemu-aarch64": REAL["qemu-aarch64"],
                               "python3.11": REAL["python3.11"]}, interp)
    status = preflight(Platform.parse("s390x"), root=root, host=AMD64)
    assert status.state is BinfmtState.MISSING
    assert status.fix == (
        "apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-s390x"
    )
    assert "IBM S/390" in status.reason


def test_disabled(tmp_path: Path, interp: Path) -> None:
    text = REAL["qemu-s390x"].replace("enabled", "disabled", 1)
    root = make_dir(tmp_path, {"qemu-s390x": text}, interp)
    status = preflight(Platform.parse("s390x"), root=root, host=AMD64)
    assert status.state is BinfmtState.DISABLED
    assert f"echo 1 > {root / 'qemu-s390x'}" in status.fix


def test_no_fix_binary_flag(tmp_path: Path, interp: Path) -> None:
    text = REAL["qemu-ppc64le"].replace("flags: PF", "flags: P")
    root = make_dir(tmp_path, {"qemu-ppc64le": text}, interp)
    status = preflight(Platform.parse("ppc64le"), root=root, host=AMD64)
    assert status.state is BinfmtState.NO_FIX_BINARY
    assert "F flag" in status.reason


def test_interpreter_missing(tmp_path: Path) -> None:
    root = make_dir(tmp_path, {"qemu-aarch64": REAL["qemu-aarch64"]}, tmp_path / "gone")
    status = preflight(Platform.parse("arm64"), root=root, host=AMD64)
    assert status.state is BinfmtState.INTERPRETER_MISSING
    assert "--reinstall qemu-user-static" in status.fix


def test_best_of_two_matching_handlers_wins(tmp_path: Path, interp: Path) -> None:
    disabled = REAL["qemu-aarch64"].replace("enabled", "disabled", 1)
    root = make_dir(tmp_path, {"a-old": disabled, "b-new": REAL["qemu-aarch64"]}, interp)
    status = preflight(Platform.parse("arm64"), root=root, host=AMD64)
    assert status.ok
    assert status.handler == "b-new"


def test_handler_disabled_restores_even_on_error(tmp_path: Path, interp: Path) -> None:
    # A fake directory stands in for the kernel's: writing "0"/"1" is what we check.
    root = make_dir(tmp_path, {"qemu-aarch64": REAL["qemu-aarch64"]}, interp)
    written: list[str] = []
    original = Path.write_text

    def spy(self: Path, data: str, *args: object, **kwargs: object) -> int:
        written.append(f"{self.name}={data}")
        return original(self, data)

    def body() -> None:
        with binfmt.handler_disabled(Platform.parse("arm64"), root=root) as names:
            assert names == ["qemu-aarch64"]
            assert written == ["qemu-aarch64=0"]
            raise RuntimeError("test body failed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "write_text", spy)
        with pytest.raises(RuntimeError, match="test body failed"):
            body()
    assert written == ["qemu-aarch64=0", "qemu-aarch64=1"]


# -- the live kernel ------------------------------------------------------------------------------


def _require_live_binfmt() -> None:
    if not (binfmt.BINFMT_DIR / "register").exists():
        pytest.fail(
            f"{binfmt.BINFMT_DIR} is not mounted: provision the test bed (scripts/provision-host) "
            "or mount it: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
        )


@pytest.mark.parametrize("name", ["arm64", "s390x", "ppc64le", "arm/v7"])
def test_live_proc_entries(name: str) -> None:
    _require_live_binfmt()
    plat = Platform.parse(name)
    assert binfmt.handlers(), "binfmt_misc is mounted but no handler parsed"
    status = preflight(plat)
    assert status.ok, f"{plat}: {status.reason}; fix: {status.fix}"
    assert status.handler == f"qemu-{plat.info.qemu}"
    assert Path(status.interpreter).exists()


def test_live_qemu_version() -> None:
    version = binfmt.qemu_version(Platform.parse("arm64"))
    assert version is not None
    assert version[0].isdigit(), version
    assert binfmt.qemu_binary(Platform.parse("arm/v7")) == "qemu-arm-static"
