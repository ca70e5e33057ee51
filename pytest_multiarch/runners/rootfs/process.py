"""Launching a command in an unpacked tree: the chroot (a private mount namespace with an
overlay, through :mod:`.launcher`) or proot argv, and the launcher process itself, killed with
its whole tree (and memory cgroup) at the run's deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_multiarch.errors import RunTimeout, UsageError
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import DEFAULT_PATH, Platform
from pytest_multiarch.runners.base import short_cmd
from pytest_multiarch.runners.rootfs.cgroup import MemoryCgroup
from pytest_multiarch.runners.rootfs.launcher import LAUNCHER
from pytest_multiarch.runners.rootfs.tree import Rootfs

__all__ = ["Job", "chroot_argv", "execute", "proot_argv", "text"]

_DEV_NODES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True, slots=True)
class Job:
    """One run's fixed facts."""

    image: str
    platform: Platform
    argv: tuple[str, ...]
    mode: str
    emulated: bool
    limit: str
    budget: float
    started: float
    #: The qemu CPU model of an emulated run ("" natively, or for qemu's own default).
    cpu_model: str = ""

    def where(self, platform: Platform) -> str:
        """How it runs, for reports."""
        if not self.emulated:
            return f"native (rootfs, {self.mode})"
        cpu_text = f", cpu {self.cpu_model or 'qemu default'}"
        if self.mode == "proot":
            return f"emulated (rootfs, proot -q {binfmt.qemu_binary(platform)}{cpu_text})"
        return f"emulated (rootfs, chroot, binfmt_misc{cpu_text})"


def chroot_argv(
    tree: Rootfs, scratch: Path, workdir: str, argv: list[str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, Any]]:
    """unshare → launcher stage "ns"; its spec (with the environment) goes through a pipe:
    argv is readable by every user in /proc/PID/cmdline."""
    if any(c in f"{tree.path}{scratch}" for c in ",:"):
        cache_dir = tree.path.parent.parent  # CACHE/<digest>/rootfs
        raise UsageError(
            f"rootfs cache dir {cache_dir} contains ',' or ':', which overlayfs "
            "mount options cannot carry; choose another cache_dir"
        )
    for sub in ("upper", "work", "merged"):
        (scratch / sub).mkdir()
    spec = {"stage": "ns", "mount": shutil.which("mount") or "/bin/mount",
            "lower": str(tree.path), "upper": str(scratch / "upper"),
            "work": str(scratch / "work"), "merged": str(scratch / "merged"),
            "dev": list(_DEV_NODES), "workdir": workdir, "argv": argv, "env": dict(env)}
    return [shutil.which("unshare") or "unshare", "--mount", "--pid", "--fork",
            "--kill-child", sys.executable, "-c", LAUNCHER], spec


def proot_argv(
    tree: Rootfs, scratch: Path, workdir: str, argv: list[str], job: Job
) -> list[str]:
    (scratch / "tmp").mkdir(mode=0o1777)
    nxt = [shutil.which("proot") or "proot"]
    if job.emulated:
        qemu = binfmt.qemu_binary(job.platform)
        # proot splits -q's value into the emulator's argv.
        nxt += ["-q", " ".join([shutil.which(qemu) or qemu,
                                *(["-cpu", job.cpu_model] if job.cpu_model else [])])]
    return [*nxt, "-r", str(tree.path), "-w", workdir, "-b", "/dev", "-b", "/proc",
            "-b", "/sys", "-b", f"{scratch / 'tmp'}:/tmp", *argv]


def execute(
    job: Job, nxt: list[str], spec: dict[str, Any] | None,
    group: MemoryCgroup | None, env: Mapping[str, str], scratch: Path,
) -> tuple[int, bytes, bytes]:
    """Start the launcher, wait until the deadline (then kill the whole tree)."""
    read_fd = write_fd = None
    if spec is not None:
        read_fd, write_fd = os.pipe()
        nxt = [*nxt, json.dumps({"spec_fd": read_fd})]
    outer = {"stage": "host", "next": nxt, "cgroup_procs": str(group.procs) if group else ""}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps(outer)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env) if spec is None else {"PATH": DEFAULT_PATH},
            start_new_session=True, cwd=str(scratch),
            pass_fds=() if read_fd is None else (read_fd,),
        )
    finally:
        if read_fd is not None:
            os.close(read_fd)
    try:
        if write_fd is not None:
            _write_spec(write_fd, spec)
        out, err = proc.communicate(timeout=job.budget)
    except subprocess.TimeoutExpired:
        _kill(proc, group)
        out, err = proc.communicate()
        error = RunTimeout(
            f"{short_cmd(job.argv)!r} in {job.image} on {job.platform} "
            f"({job.where(job.platform)}) did not finish within {job.budget:.0f}s and was "
            "killed. Under emulation this may just be slow: pass timeout=, raise "
            "--multiarch-run-timeout (native seconds, scaled by the emulation factor) or "
            "look for a hang."
        )
        error.logs = text(out) + text(err)
        raise error from None
    finally:
        if proc.poll() is None:  # KeyboardInterrupt or another error
            _kill(proc, group)
    return (proc.returncode if proc.returncode >= 0 else 128 - proc.returncode), out, err


def _kill(proc: subprocess.Popen[bytes], group: MemoryCgroup | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if group is not None:
        group.kill_all()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def text(data: bytes | None) -> str:
    """Output as text (undecodable bytes replaced)."""
    return (data or b"").decode("utf-8", errors="replace")


def _write_spec(fd: int, spec: dict[str, Any] | None) -> None:
    """Hand the launcher its spec; a launcher that died first just closes the pipe."""
    with os.fdopen(fd, "wb") as pipe, contextlib.suppress(BrokenPipeError):
        pipe.write(json.dumps(spec).encode())
