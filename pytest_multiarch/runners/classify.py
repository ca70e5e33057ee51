"""How a failed run is classified: exec format error, missing emulator, qemu crash, illegal
instruction, out of memory; and, for :func:`check_runs`, a missing command and a plain failure.

A runner builds its :class:`~pytest_multiarch.runners.base.RunResult` (with
:func:`emulator_facts` on a failure) and raises what :func:`classify` returns; an
:class:`IllegalInstruction` is proved once under qemu's newest CPU model by :func:`under_max`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pytest_multiarch.errors import (
    CommandFailed,
    CommandNotFound,
    EmulatorCrash,
    EmulatorMissing,
    ExecFormatError,
    IllegalInstruction,
    OutOfMemory,
    RunnerError,
)
from pytest_multiarch.host import binfmt, cpu
from pytest_multiarch.host.binfmt import BinfmtStatus
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import RunResult, short_cmd

__all__ = ["check_runs", "classify", "emulator_facts", "exec_format_binary",
           "illegal_instruction", "raise_classified", "under_max", "with_max_verdict"]

_EXEC_FORMAT = re.compile(r"exec format error|invalid elf image for this architecture", re.I)
_EXEC_BINARY = (
    re.compile(r"exec (\S+) failed: exec format error", re.I),  # tini / docker-init
    re.compile(r"exec (\S+): exec format error", re.I),  # runc >= 1.1
    re.compile(r"[‘'\"]([^’'\"]+)[’'\"]: exec format error", re.I),  # coreutils chroot / env
    re.compile(r"execve\(\"([^\"]+)\"\)", re.I),  # proot
    re.compile(r"qemu-\S+: (\S+): invalid elf image", re.I),  # qemu-user itself
    re.compile(r"(\S+): (?:cannot execute binary file: )?exec format error", re.I),  # shells
)
_QEMU_CRASH = (
    re.compile(r"qemu: uncaught target signal (\d+) \(([^)]*)\)"),
    re.compile(r"qemu: unhandled CPU exception[^\n]*"),
    re.compile(r"qemu(?:-\S+)?: fatal:[^\n]*"),
    re.compile(r"qemu-\S+: [^\n]*Assertion[^\n]*failed[^\n]*"),
)
# execvp() and shells retry an ENOEXEC file as a shell script: a binary then fails at "line 1".
_SHELL_FALLBACK = re.compile(r"^(\S+): line 1: syntax error: unexpected", re.M)
_NOT_FOUND = re.compile(
    r"executable file not found|no such file or directory|: not found|command not found", re.I
)


def _subject(result: RunResult) -> str:
    plat = result.platform or "?"
    where = f" ({result.where})" if result.where else ""
    return f"{short_cmd(result.cmd)!r} in {result.image or '?'} on {plat}{where}"


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def exec_format_binary(result: RunResult) -> str:
    """The binary the kernel refused, from the runtime's message; else the command's argv[0]."""
    for pattern in _EXEC_BINARY:
        match = pattern.search(result.stderr)
        if match and match.group(1) != "pid1":  # podman's catatonit names no binary
            return match.group(1)
    return result.cmd[0] if result.cmd else "?"


def classify(result: RunResult, *, hint: str = "") -> RunnerError | None:
    """The error a run stands for, or None for success and for plain application failures.

    *hint* is appended to an exec-format message (e.g. the audit's "/bin/app is x86-64").
    """
    if result.oom_killed:
        error: RunnerError = OutOfMemory(
            f"{_subject(result)} was killed by the kernel's OOM killer at its memory limit "
            f"({result.mem_limit or 'engine default'}). Under qemu-user a process that reserves a "
            "large address space commits it (MariaDB's default innodb_buffer_pool_size_max "
            "reserves terabytes): cap the program's memory settings, or raise the limit with "
            "mem_limit= if the workload needs it."
        )
    elif result.exit_code == 0:
        return None
    elif _EXEC_FORMAT.search(result.stderr):
        binary = exec_format_binary(result)
        status = result.emulator
        if result.emulated and status is not None and not status.ok:
            error = EmulatorMissing(
                f"{_subject(result)} failed with 'exec format error' for {binary} "
                f"({_last_lines(result.stderr, 1)!r}): the kernel cannot run {result.platform} "
                f"binaries because {status.reason}. Fix: {status.fix}"
            )
        else:
            plat = result.platform
            arch = plat.info.elf_description if plat is not None else "this platform"
            error = ExecFormatError(
                f"{_subject(result)} failed with 'exec format error': {binary} is not built "
                f"for {arch}, although the variant claims {plat} and such binaries run "
                f"here. The image was built with a binary of another architecture (a "
                f"cross-build that copied a host binary, or a wrong base image). "
                + (f"{hint} " if hint else "")
                + f"Check it with `file {binary}` or the audit, and rebuild that variant."
            )
    elif _is_sigill(result):
        error = illegal_instruction(result)
    else:
        crash = next((m for p in _QEMU_CRASH if (m := p.search(result.stderr))), None)
        if crash is None:
            return None
        version = result.extra.get("qemu_version", "")
        error = EmulatorCrash(
            f"{_subject(result)} died under qemu-user{f' {version}' if version else ''}: "
            f"{crash.group(0).strip()!r} (exit {result.exit_code}). The emulated process got a "
            "fatal signal: either qemu-user does not support something it did (an instruction, "
            "a syscall, a huge address-space reservation) or the program really crashes. Run it "
            "on a native host (--arch-host) or a newer qemu to tell which."
        )
    error.logs = result.logs
    return error


def raise_classified(result: RunResult) -> RunResult:
    """*result*, unless it stands for a failure of the runner or emulator (:func:`classify`),
    which is raised instead: what every runner's run() and exec() return."""
    error = classify(result)
    if error is not None:
        raise error
    return result


_SIGILL = re.compile(r"uncaught target signal 4\b|illegal instruction", re.I)
#: How to build for the level a platform promises, per architecture.
_BUILD_FOR = {
    "arm64": "-march=armv8-a", "arm/v5": "-march=armv5te", "arm/v6": "-march=armv6 -mfpu=vfp "
    "(Debian armel or Raspbian packages, not armhf)", "arm/v7": "-march=armv7-a",
    "ppc64le": "-mcpu=power8", "s390x": "-march=z13", "amd64": "-march=x86-64",
}
#: The level to publish a variant under that needs the next CPU generation.
_NEXT_LEVEL = {"arm64": "linux/arm64/v8.2", "arm/v6": "linux/arm/v7", "arm/v5": "linux/arm/v6",
               "amd64": "linux/amd64/v3"}


def _is_sigill(result: RunResult) -> bool:
    # 132 = 128 + SIGILL, as an init (tini, docker-init) or a shell reports it.
    return bool(_SIGILL.search(result.stderr)) or (
        result.exit_code == 132 and result.emulated
    )


def illegal_instruction(result: RunResult) -> IllegalInstruction:
    """The :class:`IllegalInstruction` a SIGILL run stands for, with what to do about it."""
    plat = result.platform
    level = str(plat) if plat is not None else "its platform"
    name = plat.arch_name if plat is not None else ""
    model = result.cpu_model or ("qemu default" if result.emulated else "this host's CPU")
    level_flag = (f"-march=armv{plat.variant[1:]}-a" if plat is not None and
                  plat.architecture == "arm64" and plat.variant else None)
    build = level_flag or _BUILD_FOR.get(name) or _BUILD_FOR.get(
        plat.architecture if plat else "", "the baseline of the platform")
    publish = _NEXT_LEVEL.get(name)
    text = (
        f"{_subject(result)} died of an illegal instruction (SIGILL, exit {result.exit_code}"
        f"{', ' + repr(_last_lines(result.stderr, 1)) if result.stderr.strip() else ''}) on "
        f"CPU model {model}: the program is built for a newer CPU than {level} promises. "
        f"Build it with {build}" + (f", or publish it as {publish}" if publish else "")
        + f"; --arch-cpu={plat.architecture if plat else 'ARCH'}=MODEL picks the model to test on."
    )
    error = IllegalInstruction(text)
    error.arch = name
    error.digest = result.image.rsplit("@", 1)[-1] if "@" in result.image else ""
    error.cpu_model = model
    error.level = level
    error.logs = result.logs
    return error


def with_max_verdict(
    original: IllegalInstruction, result_under_max: RunResult
) -> IllegalInstruction:
    """*original* again, saying whether the same command passed under ``max`` (runners re-run
    an :class:`IllegalInstruction` there once, to prove the cause)."""
    newest = result_under_max.cpu_model or "its default"
    # Rebuild the message from the first run's facts, adding the verdict of the second.
    again = IllegalInstruction(
        str(original)
        + (f" The same command exits 0 under qemu's newest CPU model ({newest}): the CPU level is "
           "the cause." if result_under_max.ok else
           f" It fails under qemu's newest CPU model ({newest}) too (exit "
           f"{result_under_max.exit_code}), so the cause may be elsewhere.")
    )
    for attr in ("arch", "digest", "cpu_model", "level", "logs"):
        setattr(again, attr, getattr(original, attr))
    again.passes_under_max = result_under_max.ok
    return again


def check_runs(result: RunResult, *, ok_codes: Sequence[int] = (0,), hint: str = "") -> RunResult:
    """Return *result* if its exit code is in *ok_codes*; else raise what the failure is.

    Raises the :func:`classify` error, :class:`CommandNotFound` for exit 127 with a "not found"
    message, or :class:`CommandFailed` for any other exit code.
    """
    error = classify(result, hint=hint)
    if error is None and result.exit_code in ok_codes:
        return result
    if error is None and result.exit_code == 127 and _NOT_FOUND.search(result.stderr):
        error = CommandNotFound(
            f"{_subject(result)}: command not found ({_last_lines(result.stderr, 1)}). The "
            f"variant for {result.platform} does not contain {result.cmd[:1] or 'it'} on its "
            "PATH: check the image's PATH and that the package is installed for this "
            "architecture."
        )
    if error is None:
        script = _SHELL_FALLBACK.search(result.stderr)
        hint = (
            f" {script.group(1)} is probably a binary the kernel refused (exec format error) "
            "that a shell then read as a script: check its architecture with the audit."
            if script else " The command ran, so this is the application failing on this "
            "architecture; see the container logs."
        )
        error = CommandFailed(
            f"{_subject(result)} exited {result.exit_code} after {result.duration:.1f}s: "
            f"{_last_lines(result.stderr or result.stdout) or 'no output'}.{hint}"
        )
    error.logs = error.logs or result.logs
    raise error


def under_max(
    error: IllegalInstruction, platform: Platform, *, emulated: bool, asked: str | None,
    ran_on: str, again: Callable[[str], RunResult],
) -> RunnerError:
    """*error* with the verdict of the same command once more on qemu's newest CPU model.

    *again* runs it on the model it is given.  A run that named its model (*asked*: the re-run
    itself) says no more, nor does one that already ran on the newest (*ran_on*; "" is qemu's
    default model), nor a native run: there is no emulated CPU to swap, the same silicon would
    answer again.
    """
    newest = cpu.max_model(platform)
    if not emulated or asked is not None or ran_on == newest:
        return error
    try:
        result = again(newest)
    except RunnerError as exc:
        result = RunResult(1, "", str(exc), 0.0, platform=platform)
    return with_max_verdict(error, result)


def emulator_facts(
    platform: Platform, *, host: Platform, emulated: bool, exit_code: int, stderr: str,
) -> tuple[BinfmtStatus | None, dict[str, str]]:
    """What a failed emulated run needs for its classification: the binfmt state right now (on
    exec format error) and the qemu version (when qemu spoke)."""
    if not emulated or exit_code == 0:
        return None, {}
    status = None
    if "exec format error" in stderr.lower():
        status = binfmt.preflight(platform, host=host)  # the state right now
    extra = {"qemu_version": binfmt.qemu_version(platform) or ""} if "qemu" in stderr else {}
    return status, extra
