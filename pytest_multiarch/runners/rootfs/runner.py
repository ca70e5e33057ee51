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
from pytest_multiarch.runners.rootfs.unpack import (
    UnpackLimits,
    remove_tree,
    resolve_in_root,
    unpack_layers,
)

MODES = ("auto", "proot", "chroot")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEV_NODES = ("null", "zero", "full", "random", "urandom")

# Runs on the host's Python.  Stage "host": join the memory cgroup, exec the next argv (proot, or
# unshare starting stage "ns").  Stage "ns" (in the new mount+pid namespace): overlay, /proc,
# /dev, chroot, exec — reporting a missing command and ENOEXEC the way runc words them.
_LAUNCHER = r"""
import errno, json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
if spec["stage"] == "host":
    if spec.get("cgroup_procs"):
        with open(spec["cgroup_procs"], "w") as f:
            f.write("0")
    os.execv(spec["next"][0], spec["next"])
m = spec["merged"]
def mount(*args):
    subprocess.run([spec["mount"], *args], check=True)
mount("-t", "overlay", "overlay", "-o",
      "lowerdir=%s,upperdir=%s,workdir=%s" % (spec["lower"], spec["upper"], spec["work"]), m)
for d in ("proc", "dev", "tmp"):
    os.makedirs(os.path.join(m, d), exist_ok=True)
mount("-t", "proc", "proc", os.path.join(m, "proc"))
mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", os.path.join(m, "dev"))
for n in spec["dev"]:
    open(os.path.join(m, "dev", n), "w").close()
    mount("--bind", "/dev/" + n, os.path.join(m, "dev", n))
os.chroot(m)
os.chdir(spec["workdir"])
argv, env = spec["argv"], spec["env"]
path = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
if path is None:
    sys.stderr.write('exec: "%s": executable file not found in $PATH\n' % argv[0])
    sys.exit(127)
try:
    os.execve(path, argv, env)
except OSError as exc:
    if exc.errno == errno.ENOEXEC:
        sys.stderr.write("exec %s: exec format error\n" % path)
        sys.exit(126)
    sys.stderr.write("exec %s: %s\n" % (path, exc.strerror))
    sys.exit(127 if exc.errno == errno.ENOENT else 126)
"""


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


class _MemoryCgroup:
    """A memory cgroup (v2, or v1's memory hierarchy) with a hard limit and no swap."""

    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    @classmethod
    def create(cls, name: str, limit: int) -> _MemoryCgroup | None:
        """None when we may not (not root) or cannot (no memory controller)."""
        if os.geteuid() != 0:
            return None
        unified = Path("/sys/fs/cgroup")
        try:
            if (unified / "cgroup.controllers").exists():
                if "memory" not in (unified / "cgroup.subtree_control").read_text().split():
                    (unified / "cgroup.subtree_control").write_text("+memory")
                group = cls(unified / name, True)
                group.path.mkdir()
                (group.path / "memory.max").write_text(str(limit))
                with contextlib.suppress(OSError):
                    (group.path / "memory.swap.max").write_text("0")
                return group
            v1 = unified / "memory"
            if not (v1 / "memory.limit_in_bytes").exists():
                return None
            group = cls(v1 / name, False)
            group.path.mkdir()
            (group.path / "memory.limit_in_bytes").write_text(str(limit))
            with contextlib.suppress(OSError):  # only with swap accounting
                (group.path / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return group
        except OSError:
            return None

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of this group."""
        events = self.path / ("memory.events" if self.v2 else "memory.oom_control")
        with contextlib.suppress(OSError, ValueError):
            for line in events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def kill_all(self) -> None:
        if self.v2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            return
        with contextlib.suppress(OSError):
            for pid in self.procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except OSError:
                self.kill_all()
                time.sleep(0.05)


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
        """Run *cmd* in the variant's tree; classified like the engine runner's run()."""
        started = time.monotonic()
        tree = self.prepare(image, platform)
        argv, merged_env, workdir = self._argv_env(tree, cmd, env)
        shown = tuple(argv)
        mode = self.mode_for(platform)
        emulated = self.is_emulated(platform)
        qemu = binfmt.qemu_binary(platform)
        if not emulated:
            where = f"native (rootfs, {mode})"
        elif mode == "proot":
            where = f"emulated (rootfs, proot -q {qemu})"
        else:
            where = "emulated (rootfs, chroot, binfmt_misc)"
        limit = mem_limit or self.mem_limit
        if not self._resolve_command(tree, argv[0], merged_env.get("PATH", ""), workdir):
            message = f'exec: "{argv[0]}": executable file not found in $PATH\n'
            return RunResult(127, "", message, time.monotonic() - started, message, image,
                             platform, shown, where, emulated, False, limit)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.cache_dir))
        group = _MemoryCgroup.create(f"pytest-multiarch-{self.session.id}-{uuid.uuid4().hex[:8]}",
                                     parse_mem_limit(limit))
        try:
            if mode == "chroot":
                if any(c in f"{tree.path}{scratch}" for c in ",:"):
                    raise UsageError(
                        f"rootfs cache dir {self.cache_dir} contains ',' or ':', which overlayfs "
                        "mount options cannot carry; choose another cache_dir"
                    )
                for sub in ("upper", "work", "merged"):
                    (scratch / sub).mkdir()
                inner = {"stage": "ns", "mount": shutil.which("mount") or "/bin/mount",
                         "lower": str(tree.path), "upper": str(scratch / "upper"),
                         "work": str(scratch / "work"), "merged": str(scratch / "merged"),
                         "dev": list(_DEV_NODES), "workdir": workdir, "argv": argv,
                         "env": merged_env}
                nxt = [shutil.which("unshare") or "unshare", "--mount", "--pid", "--fork",
                       "--kill-child", sys.executable, "-c", _LAUNCHER, json.dumps(inner)]
            else:
                (scratch / "tmp").mkdir(mode=0o1777)
                nxt = [shutil.which("proot") or "proot"]
                if emulated:
                    nxt += ["-q", shutil.which(qemu) or qemu]
                nxt += ["-r", str(tree.path), "-w", workdir, "-b", "/dev", "-b", "/proc",
                        "-b", "/sys", "-b", f"{scratch / 'tmp'}:/tmp", *argv]
            outer = {"stage": "host", "next": nxt,
                     "cgroup_procs": str(group.procs) if group else ""}
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, json.dumps(outer)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=merged_env if mode == "proot" else {"PATH": DEFAULT_PATH},
                start_new_session=True, cwd=str(scratch),
            )
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc, group)
                out, err = proc.communicate()
                error = RunTimeout(
                    f"{short_cmd(shown)!r} in {image} on {platform} ({where}) did not finish "
                    f"within {timeout:.0f}s and was killed. Under emulation this may just be "
                    "slow: scale the timeout by the emulation factor, or look for a hang."
                )
                error.logs = _text(out) + _text(err)
                raise error from None
            finally:
                if proc.poll() is None:  # KeyboardInterrupt or another error
                    self._kill(proc, group)
            code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
            oom = group.oom_killed() if group is not None else False
        finally:
            if group is not None:
                group.remove()
            remove_tree(scratch)
        stdout, stderr = _text(out), _text(err)
        status = None
        if emulated and code != 0 and "exec format error" in stderr.lower():
            status = binfmt.preflight(platform, host=self.host)
        extra = {"qemu_version": binfmt.qemu_version(platform) or ""} if (
            emulated and code != 0 and "qemu" in stderr) else {}
        result = RunResult(code, stdout, stderr, time.monotonic() - started, stdout + stderr,
                           image, platform, shown, where, emulated, oom, limit, status, extra)
        classified = classify(result)
        if classified is not None:
            raise classified
        return result

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], group: _MemoryCgroup | None) -> None:
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
    ) -> Container:
        """Not supported: services need the engine runner (no network namespace, no ports)."""
        raise RunnerError(
            f"the rootfs runner cannot start a long-running container of {image} on {platform}: "
            "it has no network namespace or port publishing. Use a Docker engine for services "
            "(--engine=docker, or --arch-host for a remote one); one-shot commands (run) work."
        )

    def close(self) -> None:
        """Nothing is left running after run(); the unpacked trees stay cached."""

    def __enter__(self) -> RootfsRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
