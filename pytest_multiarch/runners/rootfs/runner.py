"""Run variants without any container engine: unpack the layers, then proot or chroot into them.

The variant's layers come from the registry client (or an OCI layout) and are unpacked once per
variant digest into ``CACHE/rootfs/<hex>`` (:mod:`.tree`).  Commands then run in it
(:mod:`.process`):

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

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_multiarch.errors import (
    EmulatorMissing,
    IllegalInstruction,
    NoDefaultCommand,
    RunnerError,
    UsageError,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import DEFAULT_PATH, Platform
from pytest_multiarch.runners.base import (
    DEFAULT_MEM_LIMIT,
    DEFAULT_RUN_TIMEOUT,
    Command,
    Container,
    RunResult,
    Session,
    as_argv,
    parse_mem_limit,
    short_cmd,
)
from pytest_multiarch.runners.classify import emulator_facts, raise_classified, under_max
from pytest_multiarch.runners.common import RunnerBase
from pytest_multiarch.runners.rootfs.cgroup import MemoryCgroup
from pytest_multiarch.runners.rootfs.process import (
    Job,
    chroot_argv,
    execute,
    proot_argv,
    text,
)
from pytest_multiarch.runners.rootfs.tree import Rootfs, default_cache_dir, prepare
from pytest_multiarch.runners.rootfs.unpack import UnpackLimits, remove_tree, resolve_in_root

MODES = ("auto", "proot", "chroot")


class RootfsRunner(RunnerBase):
    """A :class:`~pytest_multiarch.runners.base.Runner` needing no engine (see module docs).

    *registry* is the client the layers are read through
    (:func:`pytest_multiarch.oci.resolve.open_source`; an OCI layout needs none).
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
        cpu_models: Mapping[str, str] | None = None,
        cpu_source: str = "option",
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"rootfs mode {mode!r}; valid: {', '.join(MODES)}")
        super().__init__(session=session, mem_limit=mem_limit, run_timeout=run_timeout,
                         cpu_models=cpu_models, cpu_source=cpu_source)
        self.unpack_limits = unpack_limits or UnpackLimits()
        self.registry = registry
        self.cache_dir = cache_dir or default_cache_dir()
        self.mode = mode
        self.platform = platform
        self.host = Platform.host()

    def prepare(self, image: str, platform: Platform) -> Rootfs:
        """The unpacked tree of *image*'s *platform* variant, from the cache or unpacked now."""
        return prepare(image, platform, cache_dir=self.cache_dir, registry=self.registry,
                       limits=self.unpack_limits)

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
        cpu_model: str | None = None,
    ) -> RunResult:
        """Run *cmd* in the variant's tree; classified like the engine runner's run() (an
        illegal instruction is re-run once under ``max`` to say whether the CPU level is the
        cause); *cpu_model* overrides the qemu CPU model.

        Every run has a deadline (*timeout*, else :attr:`run_timeout` scaled by the emulation
        factor) and a memory cgroup; an emulated run that cannot get one is refused.
        """
        started = time.monotonic()
        tree = self.prepare(image, platform)
        argv, merged_env, workdir = self._argv_env(tree, cmd, env)
        emulated = self.is_emulated(platform)
        model = self.chosen_model(platform) if cpu_model is None else cpu_model
        job = Job(image, platform, tuple(argv), self.mode_for(platform),
                  emulated, mem_limit or self.mem_limit,
                  self.run_timeout_for(platform, timeout), started, model if emulated else "")
        if not self._resolve_command(tree, argv[0], merged_env.get("PATH", ""), workdir):
            message = f'exec: "{argv[0]}": executable file not found in $PATH\n'
            return RunResult(127, "", message, time.monotonic() - started, message, image,
                             platform, job.argv, job.where(platform), job.emulated, False,
                             job.limit, cpu_model=job.cpu_model)
        try:
            return self._run_in(tree, job, workdir, merged_env)
        except IllegalInstruction as exc:
            raise under_max(
                exc, platform, emulated=job.emulated, asked=cpu_model, ran_on=job.cpu_model,
                again=lambda newest: self.run(image, platform, cmd, env=env, timeout=timeout,
                                              mem_limit=mem_limit, cpu_model=newest),
            ) from None

    def _run_in(self, tree: Rootfs, job: Job, workdir: str, env: Mapping[str, str]) -> RunResult:
        """Run *job* in *tree* (a scratch dir and memory cgroup of its own), classified."""
        argv = list(job.argv)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.cache_dir))
        group = self._memory_group(job)
        try:
            if job.mode == "chroot":
                # binfmt_misc's qemu takes its CPU model from QEMU_CPU.
                inner_env = {**({"QEMU_CPU": job.cpu_model} if job.cpu_model else {}), **env}
                nxt, spec = chroot_argv(tree, scratch, workdir, argv, inner_env)
            else:
                nxt, spec = proot_argv(tree, scratch, workdir, argv, job), None
            code, out, err = execute(job, nxt, spec, group, env, scratch)
            oom = group.oom_killed() if group is not None else False
        finally:
            if group is not None:
                group.remove()
            remove_tree(scratch)
        return self._result(job, code, text(out), text(err), oom,
                            job.limit if group is not None else "none")

    def _memory_group(self, job: Job) -> MemoryCgroup | None:
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

    def _result(self, job: Job, code: int, stdout: str, stderr: str, oom: bool,
                limit: str) -> RunResult:
        """The classified result: raises what a failure of the runner or emulator is."""
        status, extra = emulator_facts(job.platform, host=self.host, emulated=job.emulated,
                                       exit_code=code, stderr=stderr)
        result = RunResult(code, stdout, stderr, time.monotonic() - job.started, stdout + stderr,
                           job.image, job.platform, job.argv, job.where(job.platform),
                           job.emulated, oom, limit, status, extra, job.cpu_model)
        return raise_classified(result)

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
        network_aliases: Sequence[str] = (),
        files: Mapping[str, bytes] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Container:
        """Not supported: services need the engine runner (no network namespace, no ports).

        The engine runner's own keywords are accepted so that passing one is this clear error
        naming it, not a ``TypeError``."""
        engine_only = {"network": network, "entrypoint": entrypoint, "tmpfs": tmpfs,
                       "volumes": volumes, "network_aliases": network_aliases or None,
                       "files": files, "labels": labels}
        given = [k for k, v in engine_only.items() if v is not None]
        named = (f" ({', '.join(given)}: engine-only option{'s' if len(given) > 1 else ''})"
                 if given else "")
        raise RunnerError(
            f"the rootfs runner cannot start a long-running container of {image} on {platform}"
            f"{named}: it has no network namespace or port publishing. Use a Docker engine "
            "for services (--engine=docker, or --arch-host for a remote one); one-shot commands "
            "(run) work."
        )

    def close(self) -> None:
        """Nothing is left running after run(); the unpacked trees stay cached."""
