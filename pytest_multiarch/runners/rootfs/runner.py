"""Run variants without any container engine: unpack the layers, then proot or chroot into them.

The variant's layers come from the registry client (or an OCI layout) and are unpacked once per
variant digest into ``CACHE/rootfs/<hex>`` (:mod:`.unpack`: whiteouts, nothing escapes the
directory; unpacked into a temporary directory and renamed into place, so a cached tree is always
complete).  Commands then run in it:

* ``proot`` mode (rootless, the fallback): ``proot -q qemu-ARCH-static -r ROOTFS …``; qemu-user
  is called directly, binfmt_misc is not needed.  Writes land in the cached tree (except /tmp,
  which is a fresh directory per run), so keep one-shot checks read-only.
* ``chroot`` mode (root, and binfmt_misc can run the arch: native or an ``F`` handler): a private
  mount namespace with an overlay over the cached tree (writes go to a throw-away upper dir),
  ``/proc`` and a minimal ``/dev``; the command is exec'd after ``chroot``.

As root, every run gets a memory cgroup with the runner's limit (an emulated process can balloon,
see TESTBED.md on MariaDB), so an OOM kill is detected and classified like the engine's.

Limits, by design: there is no network namespace and no port publishing, so services with ports
(``start()``) need the engine runner; the image's ``User`` is not switched to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_multiarch._fs import cache_root
from pytest_multiarch.errors import (
    EmulatorMissing,
    NoDefaultCommand,
    PlatformMismatchError,
    RunnerError,
    RunTimeout,
    UsageError,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import (
    DEFAULT_MEM_LIMIT,
    DEFAULT_RUN_TIMEOUT,
    Command,
    Container,
    RunResult,
    Session,
    as_argv,
    classify,
    parse_mem_limit,
    require_digest,
    short_cmd,
)
from pytest_multiarch.runners.emulation import DEFAULT_FACTOR, run_deadline
from pytest_multiarch.runners.rootfs.cgroup import MemoryCgroup
from pytest_multiarch.runners.rootfs.launcher import LAUNCHER
from pytest_multiarch.runners.rootfs.unpack import (
    UnpackLimits,
    remove_tree,
    resolve_in_root,
    unpack_layers,
)

MODES = ("auto", "proot", "chroot")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEV_NODES = ("null", "zero", "full", "random", "urandom")

@dataclass(frozen=True, slots=True)
class Rootfs:
    """An unpacked variant: its directory, its image config and its digest."""

    path: Path
    config: Mapping[str, Any]
    digest: str
    platform: Platform

    @property
    def container_config(self) -> Mapping[str, Any]:
        """The image config's ``config`` object (Env, Entrypoint, Cmd, WorkingDir …)."""
        value = self.config.get("config") or {}
        return value if isinstance(value, Mapping) else {}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/rootfs`` (read per call, never at import)."""
    return cache_root("rootfs")


class RootfsRunner:
    """A :class:`~pytest_multiarch.runners.base.Runner` needing no engine (see module docs).

    *source_factory* opens an image reference for reading (default:
    :func:`pytest_multiarch.oci.resolve.open_source` with *registry*).
    """

    def __init__(
        self,
        *,
        registry: Any = None,
        cache_dir: Path | None = None,
        mode: str = "auto",
        platform: Platform | None = None,
        session: Session | None = None,
        mem_limit: str = DEFAULT_MEM_LIMIT,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        unpack_limits: UnpackLimits | None = None,
    ) -> None:
        self.unpack_limits = unpack_limits or UnpackLimits()
        if mode not in MODES:
            raise UsageError(f"rootfs mode {mode!r}; valid: {', '.join(MODES)}")
        self.registry = registry
        self.cache_dir = cache_dir or default_cache_dir()
        self.mode = mode
        self.platform = platform
        self.session = session or Session.new()
        self.mem_limit = mem_limit
        parse_mem_limit(mem_limit)
        self.run_timeout = run_deadline(run_timeout, DEFAULT_RUN_TIMEOUT, 1.0)  # validates it
        self._factors: dict[str, float] = {}
        self.host = Platform.host()

    # -- preparing the tree -------------------------------------------------------------------

    def prepare(self, image: str, platform: Platform) -> Rootfs:
        """The unpacked tree of *image*'s *platform* variant, from the cache or unpacked now."""
        require_digest(image)
        digest = image.rsplit("@", 1)[1]
        cached = self._cached(digest, platform)
        if cached is not None:
            return cached
        from pytest_multiarch.oci.resolve import open_source, resolve

        source, ref = open_source(image, client=self.registry)
        resolved = resolve(source, ref, platform)
        found = resolved.config_platform
        if found is not None and not found.satisfies(platform):
            raise PlatformMismatchError(
                f"{image} is {found}, not {platform}: pass the {platform} variant's digest"
            )
        cached = self._cached(resolved.digest, platform)
        if cached is not None:
            return cached
        variant_ref = ref.with_digest(resolved.digest)
        final = self._dir(resolved.digest)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(resolved.digest):
            if not final.is_dir():
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.cache_dir))
                try:
                    unpack_layers(
                        (source.open_blob(variant_ref, layer) for layer in resolved.layers),
                        tmp / "rootfs", limits=self.unpack_limits,
                        digests=[layer.digest for layer in resolved.layers],
                    )
                    meta = {"digest": resolved.digest, "platform": str(platform),
                            "config": dict(resolved.config), "image": image}
                    (tmp / "image.json").write_text(json.dumps(meta))
                    os.rename(tmp, final)
                finally:
                    if tmp.exists():
                        remove_tree(tmp)
        cached = self._cached(resolved.digest, platform)
        assert cached is not None
        return cached

    def _dir(self, digest: str) -> Path:
        return self.cache_dir / digest.replace(":", "-")

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        # Several xdist workers may want the same tree: one unpacks, the others wait.
        with (self.cache_dir / f".{digest.replace(':', '-')}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _cached(self, digest: str, platform: Platform) -> Rootfs | None:
        top = self._dir(digest)
        try:
            meta = json.loads((top / "image.json").read_text())
        except (OSError, ValueError):
            return None
        found = Platform.parse(meta["platform"])
        if found != platform:
            raise PlatformMismatchError(
                f"{digest} is the {found} variant, not {platform}: pass the {platform} "
                "variant's digest"
            )
        return Rootfs(top / "rootfs", meta["config"], digest, found)

    # -- running ------------------------------------------------------------------------------

    def mode_for(self, platform: Platform) -> str:
        """``chroot`` (root, and the kernel runs the arch) or ``proot``; else EmulatorMissing."""
        native = binfmt.is_native(platform, self.host)
        if self.mode == "chroot" or (
            self.mode == "auto" and os.geteuid() == 0 and shutil.which("unshare")
            and (native or binfmt.preflight(platform, host=self.host).ok)
        ):
            if os.geteuid() != 0:
                raise UsageError("rootfs mode 'chroot' needs root; use mode='proot'")
            return "chroot"
        if shutil.which("proot") is None:
            raise EmulatorMissing(
                f"the rootfs runner needs proot to run {platform} without root or without a "
                "working binfmt_misc handler. Fix: apt-get install proot"
            )
        if not native and shutil.which(binfmt.qemu_binary(platform)) is None:
            raise EmulatorMissing(
                f"no {binfmt.qemu_binary(platform)} on PATH to run {platform} binaries under "
                "proot. Fix: apt-get install qemu-user-static"
            )
        return "proot"

    def is_emulated(self, platform: Platform) -> bool:
        """Whether *platform* needs qemu-user on this host."""
        return not binfmt.is_native(platform, self.host)

    def describe(self, platform: Platform | None = None) -> str:
        """``emulated`` or ``native on HOST``."""
        plat = platform or self.platform or self.host
        return "emulated" if self.is_emulated(plat) else f"native on {socket.gethostname()}"

    def _argv_env(
        self, tree: Rootfs, cmd: Command | None, env: Mapping[str, str] | None
    ) -> tuple[list[str], dict[str, str], str]:
        conf = tree.container_config
        entrypoint = list(conf.get("Entrypoint") or [])
        argv = entrypoint + (list(as_argv(cmd)) if cmd is not None else list(conf.get("Cmd") or []))
        if not argv:
            raise NoDefaultCommand(
                f"{tree.digest} on {tree.platform} has no default command (its config has "
                "neither Entrypoint nor Cmd); pass one, e.g. ['uname', '-m']"
            )
        merged: dict[str, str] = {"PATH": DEFAULT_PATH, "HOME": "/root"}
        for item in conf.get("Env") or []:
            key, _, value = str(item).partition("=")
            merged[key] = value
        merged.update(env or {})
        return argv, merged, str(conf.get("WorkingDir") or "/")

    def _resolve_command(self, tree: Rootfs, argv0: str, path: str, workdir: str) -> bool:
        if "/" in argv0:
            base = [] if argv0.startswith("/") else workdir.split("/")
            target = resolve_in_root(tree.path, [*base, *argv0.split("/")])
            return target.is_file()
        return any(
            resolve_in_root(tree.path, [*d.split("/"), argv0]).is_file()
            for d in path.split(":") if d
        )

    def run(
        self,
        image: str,
        platform: Platform,
        cmd: Command | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        mem_limit: str | None = None,
    ) -> RunResult:
        """Run *cmd* in the variant's tree; classified like the engine runner's run().

        Every run has a deadline (*timeout*, else :attr:`run_timeout` scaled by the emulation
        factor) and a memory cgroup; an emulated run that cannot get one is refused.
        """
        started = time.monotonic()
        tree = self.prepare(image, platform)
        argv, merged_env, workdir = self._argv_env(tree, cmd, env)
        job = _Job(image, platform, tuple(argv), self.mode_for(platform),
                   self.is_emulated(platform), mem_limit or self.mem_limit,
                   self.run_timeout_for(platform, timeout), started)
        if not self._resolve_command(tree, argv[0], merged_env.get("PATH", ""), workdir):
            message = f'exec: "{argv[0]}": executable file not found in $PATH\n'
            return RunResult(127, "", message, time.monotonic() - started, message, image,
                             platform, job.argv, job.where(platform), job.emulated, False,
                             job.limit)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.cache_dir))
        group = self._memory_group(job)
        try:
            if job.mode == "chroot":
                nxt, spec = self._chroot_argv(tree, scratch, workdir, argv, merged_env)
            else:
                nxt, spec = self._proot_argv(tree, scratch, workdir, argv, job), None
            code, out, err = self._execute(job, nxt, spec, group, merged_env, scratch)
            oom = group.oom_killed() if group is not None else False
        finally:
            if group is not None:
                group.remove()
            remove_tree(scratch)
        return self._result(job, code, _text(out), _text(err), oom,
                            job.limit if group is not None else "none")

    def run_timeout_for(self, platform: Platform, timeout: float | None = None) -> float:
        """*timeout* if given, else this runner's default deadline scaled for *platform*."""
        factor = self._factors.get(platform.arch_name, DEFAULT_FACTOR)
        return run_deadline(timeout, self.run_timeout,
                            factor if self.is_emulated(platform) else 1.0)

    def set_emulation_factor(self, platform: Platform, factor: float) -> None:
        """Scale default deadlines of *platform* by a measured emulation factor."""
        self._factors[platform.arch_name] = max(1.0, factor)

    def _memory_group(self, job: _Job) -> MemoryCgroup | None:
        """The run's memory cgroup; refuses an emulated run that cannot have one."""
        group = MemoryCgroup.create(f"pytest-multiarch-{self.session.id}-{uuid.uuid4().hex[:8]}",
                                     parse_mem_limit(job.limit))
        if group is None and job.emulated:
            why = ("not running as root, it cannot make a memory cgroup" if os.geteuid() != 0
                   else "no memory cgroup could be made under /sys/fs/cgroup (no memory "
                   "controller, or not writable)")
            raise RunnerError(
                f"the rootfs runner cannot limit the memory of {short_cmd(job.argv)!r} in "
                f"{job.image} on {job.platform} ({job.where(job.platform)}): {why}. A process "
                "under qemu-user can commit its whole address-space reservation (TESTBED.md: "
                "MariaDB took the machine), so emulated runs without a limit are refused. Fix: "
                "run as root (a memory cgroup per run), use a container engine (--engine=docker), "
                "or run the arch natively (--arch-host)."
            )
        return group

    def _chroot_argv(
        self, tree: Rootfs, scratch: Path, workdir: str, argv: list[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, Any]]:
        """unshare → launcher stage "ns"; its spec (with the environment) goes through a pipe:
        argv is readable by every user in /proc/PID/cmdline."""
        if any(c in f"{tree.path}{scratch}" for c in ",:"):
            raise UsageError(
                f"rootfs cache dir {self.cache_dir} contains ',' or ':', which overlayfs "
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

    def _proot_argv(
        self, tree: Rootfs, scratch: Path, workdir: str, argv: list[str], job: _Job
    ) -> list[str]:
        (scratch / "tmp").mkdir(mode=0o1777)
        nxt = [shutil.which("proot") or "proot"]
        if job.emulated:
            qemu = binfmt.qemu_binary(job.platform)
            nxt += ["-q", shutil.which(qemu) or qemu]
        return [*nxt, "-r", str(tree.path), "-w", workdir, "-b", "/dev", "-b", "/proc",
                "-b", "/sys", "-b", f"{scratch / 'tmp'}:/tmp", *argv]

    def _execute(
        self, job: _Job, nxt: list[str], spec: dict[str, Any] | None,
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
            self._kill(proc, group)
            out, err = proc.communicate()
            error = RunTimeout(
                f"{short_cmd(job.argv)!r} in {job.image} on {job.platform} "
                f"({job.where(job.platform)}) did not finish within {job.budget:.0f}s and was "
                "killed. Under emulation this may just be slow: pass timeout=, raise "
                "--multiarch-run-timeout (native seconds, scaled by the emulation factor) or "
                "look for a hang."
            )
            error.logs = _text(out) + _text(err)
            raise error from None
        finally:
            if proc.poll() is None:  # KeyboardInterrupt or another error
                self._kill(proc, group)
        return (proc.returncode if proc.returncode >= 0 else 128 - proc.returncode), out, err

    def _result(self, job: _Job, code: int, stdout: str, stderr: str, oom: bool,
                limit: str) -> RunResult:
        """The classified result: raises what a failure of the runner or emulator is."""
        status = None
        if job.emulated and code != 0 and "exec format error" in stderr.lower():
            status = binfmt.preflight(job.platform, host=self.host)
        extra = {"qemu_version": binfmt.qemu_version(job.platform) or ""} if (
            job.emulated and code != 0 and "qemu" in stderr) else {}
        result = RunResult(code, stdout, stderr, time.monotonic() - job.started, stdout + stderr,
                           job.image, job.platform, job.argv, job.where(job.platform),
                           job.emulated, oom, limit, status, extra)
        classified = classify(result)
        if classified is not None:
            raise classified
        return result

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], group: MemoryCgroup | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if group is not None:
            group.kill_all()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def start(
        self,
        image: str,
        platform: Platform,
        cmd: Command | None = None,
        *,
        env: Mapping[str, str] | None = None,
        ports: Sequence[int | str] = (),
        mem_limit: str | None = None,
        name: str | None = None,
        network: str | None = None,
        entrypoint: Command | None = None,
        tmpfs: Mapping[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Container:
        """Not supported: services need the engine runner (no network namespace, no ports).

        The engine runner's own keywords are accepted so that passing one is this clear error
        naming it, not a ``TypeError``."""
        given = [k for k, v in (("network", network), ("entrypoint", entrypoint),
                                ("tmpfs", tmpfs), ("volumes", volumes)) if v is not None]
        engine_only = (f" ({', '.join(given)}: engine-only option{'s' if len(given) > 1 else ''})"
                       if given else "")
        raise RunnerError(
            f"the rootfs runner cannot start a long-running container of {image} on {platform}"
            f"{engine_only}: it has no network namespace or port publishing. Use a Docker engine "
            "for services (--engine=docker, or --arch-host for a remote one); one-shot commands "
            "(run) work."
        )

    def close(self) -> None:
        """Nothing is left running after run(); the unpacked trees stay cached."""

    def __enter__(self) -> RootfsRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Job:
    """One run's fixed facts."""

    image: str
    platform: Platform
    argv: tuple[str, ...]
    mode: str
    emulated: bool
    limit: str
    budget: float
    started: float

    def where(self, platform: Platform) -> str:
        """How it runs, for reports."""
        if not self.emulated:
            return f"native (rootfs, {self.mode})"
        if self.mode == "proot":
            return f"emulated (rootfs, proot -q {binfmt.qemu_binary(platform)})"
        return "emulated (rootfs, chroot, binfmt_misc)"


def _write_spec(fd: int, spec: dict[str, Any] | None) -> None:
    """Hand the launcher its spec; a launcher that died first just closes the pipe."""
    with os.fdopen(fd, "wb") as pipe, contextlib.suppress(BrokenPipeError):
        pipe.write(json.dumps(spec).encode())
