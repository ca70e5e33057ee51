"""Failure classification on the real strings runc, docker-init, chroot, proot and qemu-user print
(captured on the test bed: Docker 20.10 + runc 1.1, qemu-user-static 7.2, proot 5.1)."""

from __future__ import annotations

import pytest

from pytest_multiarch.errors import (
    CommandFailed,
    CommandNotFound,
    EmulatorCrash,
    EmulatorMissing,
    ExecFormatError,
    OutOfMemory,
    RunnerError,
    UsageError,
)
from pytest_multiarch.host.binfmt import BinfmtState, BinfmtStatus
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import RunResult, as_argv, parse_mem_limit, require_digest
from pytest_multiarch.runners.classify import check_runs, classify, exec_format_binary

ARM64 = Platform.parse("arm64")
IMAGE = "127.0.0.1:5000/corpus/busybox@sha256:" + "ab" * 32

# Verbatim output captured on the test bed.
RUNC_EXEC_FORMAT = "exec /bin/uname: exec format error\n"
TINI_EXEC_FORMAT = "[FATAL tini (7)] exec uname failed: Exec format error\n"
CHROOT_EXEC_FORMAT = "exec /bin/uname: exec format error\n"  # the rootfs runner's launcher
COREUTILS_CHROOT_EXEC_FORMAT = "chroot: failed to run command ‘/bin/uname’: Exec format error\n"
BASH_EXEC_FORMAT = "bash: /tmp/fakearm: cannot execute binary file: Exec format error\n"
QEMU_WRONG_ELF = "qemu-aarch64-static: /bin/true: Invalid ELF image for this architecture\n"
# busybox sh (and execvp) retry an ENOEXEC file as a script:
BUSYBOX_FALLBACK = '/opt/helpers/arm-tool: line 1: syntax error: unexpected word (expecting ")")\n'
QEMU_SEGV = "qemu: uncaught target signal 11 (Segmentation fault) - core dumped\n"
QEMU_ABRT = "qemu: uncaught target signal 6 (Aborted) - core dumped\n"
RUNC_NOT_FOUND = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start "
    'container process: exec: "nope": executable file not found in $PATH: unknown\n'
)
RUNC_NO_SUCH_FILE = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to start "
    'container process: exec: "/nope": stat /nope: no such file or directory: unknown\n'
)
TINI_NOT_FOUND = "[FATAL tini (9)] exec nope failed: No such file or directory\n"
SH_NOT_FOUND = "sh: nope: not found\n"

DISABLED = BinfmtStatus(
    ARM64, BinfmtState.DISABLED,
    "the binfmt_misc handler 'qemu-aarch64' (/usr/libexec/qemu-binfmt/aarch64-binfmt-P) is "
    "disabled", "echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64", "qemu-aarch64",
)
OK = BinfmtStatus(ARM64, BinfmtState.OK, "emulated through qemu-aarch64")


def result(code: int, stderr: str = "", *, emulated: bool = True, oom: bool = False,
           emulator: BinfmtStatus | None = None, cmd: tuple[str, ...] = ("uname", "-m"),
           qemu: str = "") -> RunResult:
    return RunResult(code, "", stderr, 0.4, stderr, IMAGE, ARM64, cmd, "emulated", emulated,
                     oom, "512m", emulator, {"qemu_version": qemu} if qemu else {})


def test_success_and_plain_failures_are_not_errors() -> None:
    assert classify(result(0)) is None
    assert classify(result(3, "boom\n")) is None
    assert classify(result(127, RUNC_NOT_FOUND)) is None  # run() returns it; check_runs raises


@pytest.mark.parametrize("stderr", [RUNC_EXEC_FORMAT, TINI_EXEC_FORMAT, CHROOT_EXEC_FORMAT])
def test_exec_format_error_without_emulator_is_emulator_missing(stderr: str) -> None:
    error = classify(result(126, stderr, emulator=DISABLED))
    assert isinstance(error, EmulatorMissing)
    text = str(error)
    assert "exec format error" in text
    assert IMAGE in text
    assert "linux/arm64" in text
    assert "Fix: echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64" in text
    assert error.logs == stderr


@pytest.mark.parametrize(
    ("stderr", "binary"),
    [(RUNC_EXEC_FORMAT, "/bin/uname"), (TINI_EXEC_FORMAT, "uname"),
     (QEMU_WRONG_ELF, "/bin/true"), (BASH_EXEC_FORMAT, "/tmp/fakearm"),
     (COREUTILS_CHROOT_EXEC_FORMAT, "/bin/uname")],
)
def test_exec_format_error_with_working_emulator_blames_the_binary(stderr: str,
                                                                   binary: str) -> None:
    res = result(126, stderr, emulator=OK)
    assert exec_format_binary(res) == binary
    error = classify(res, hint="The audit found /opt/tool is x86-64.")
    assert isinstance(error, ExecFormatError)
    assert binary in str(error)
    assert "AArch64" in str(error)
    assert "The audit found /opt/tool is x86-64." in str(error)


def test_exec_format_error_on_a_native_host_is_exec_format_error() -> None:
    assert isinstance(classify(result(1, RUNC_EXEC_FORMAT, emulated=False)), ExecFormatError)


@pytest.mark.parametrize(("stderr", "code"), [(QEMU_SEGV, 139), (QEMU_ABRT, 134)])
def test_qemu_uncaught_signal_is_emulator_crash(stderr: str, code: int) -> None:
    error = classify(result(code, stderr, qemu="7.2.22"))
    assert isinstance(error, EmulatorCrash)
    assert stderr.split(" - ")[0] in str(error)
    assert f"exit {code}" in str(error)
    assert "7.2.22" in str(error)


def test_oom_wins_over_everything() -> None:
    error = classify(result(137, "Killed\n", oom=True))
    assert isinstance(error, OutOfMemory)
    assert "512m" in str(error)
    assert "mem_limit=" in str(error)


@pytest.mark.parametrize("stderr", [RUNC_NOT_FOUND, RUNC_NO_SUCH_FILE, TINI_NOT_FOUND,
                                    SH_NOT_FOUND])
def test_check_runs_command_not_found(stderr: str) -> None:
    with pytest.raises(CommandNotFound, match="command not found"):
        check_runs(result(127, stderr, cmd=("nope",)))


def test_check_runs_application_failure() -> None:
    with pytest.raises(CommandFailed, match=r"exited 3 after 0\.4s: boom") as info:
        check_runs(result(3, "boom\n"))
    assert info.value.logs == "boom\n"
    assert check_runs(result(3, "boom\n"), ok_codes=(0, 3)).exit_code == 3


def test_every_classified_error_is_a_runner_error() -> None:
    for res in (result(126, RUNC_EXEC_FORMAT, emulator=DISABLED), result(139, QEMU_SEGV),
                result(137, "", oom=True)):
        assert isinstance(classify(res), RunnerError)


def test_messages_are_one_paragraph() -> None:
    for res in (result(126, RUNC_EXEC_FORMAT, emulator=DISABLED), result(139, QEMU_SEGV),
                result(137, "", oom=True), result(126, RUNC_EXEC_FORMAT, emulator=OK)):
        assert "\n" not in str(classify(res))


def test_helpers() -> None:
    assert as_argv("sh -c 'echo hi'") == ("sh", "-c", "echo hi")
    assert parse_mem_limit("512m") == 512 << 20
    assert parse_mem_limit("1g") == 1 << 30
    with pytest.raises(UsageError, match="invalid memory limit"):
        parse_mem_limit("lots")
    with pytest.raises(UsageError, match="by digest"):
        require_digest("127.0.0.1:5000/corpus/busybox:1")
    require_digest(IMAGE)


def test_shell_fallback_of_a_refused_binary_gets_a_hint() -> None:
    with pytest.raises(CommandFailed, match="probably a binary the kernel refused"):
        check_runs(result(2, BUSYBOX_FALLBACK, emulated=False,
                          cmd=("/opt/helpers/arm-tool", "uname", "-m")))
