"""What the engine runner does differently when the Docker-compatible API is podman's.

* **ulimits**: rootful podman asks runc for ``nofile=1048576`` and ``nproc=4194304`` whatever the
  host allows; where the service's hard limits are lower (this VM: 20000 open files) runc fails
  with ``error setting rlimit type 7``.  Containers get podman's defaults capped at the service's
  own hard limits (read from ``/proc/PID/limits`` of the socket's peer on a local engine; else
  this process's, which is what rootless podman does) and ``nproc`` at ``kernel.pid_max``
  (podman lowers its own to that: 32768 here, while the shell has 96365).  A refusal that
  remains is :class:`~pytest_multiarch.errors.UlimitRefused`, naming the limit and the fix.
* **init**: podman's ``--init`` is catatonit, which reports a missing command as exit 1
  (``failed to exec pid1: No such file or directory``); that is exit 127, like docker-init's.
* **OOM kills**: podman 4.3 with cgroup v1 does not report ``OOMKilled`` (conmon misses the
  event); on a local engine the kernel's log line naming the container's cgroup tells.
* **rootless on cgroup v1** ignores every resource limit ("Resource limits are not supported and
  ignored on cgroups V1 rootless systems") while its Docker API still claims ``MemoryLimit``;
  the libpod info endpoint tells, and emulated runs are refused there (see
  :func:`memory_limit_refusal`): an emulated process without a limit can take the whole machine.
* **plain-HTTP registries**: Docker pulls from ``127.0.0.0/8`` over plain HTTP by itself; podman
  only from registries ``registries.conf`` marks insecure.  A podman service the plugin starts
  gets its own file (``CONTAINERS_REGISTRIES_CONF``, see :func:`registries_conf`): the system's
  plus loopback and ``--multiarch-insecure-registry`` hosts marked insecure, so both engines
  follow one rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import struct
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from docker.types import Ulimit

from pytest_multiarch.errors import RunnerError, UlimitRefused

__all__ = ["LOOPBACK_REGISTRIES", "PODMAN_DEFAULT_ULIMITS", "init_exit_code",
           "kernel_oom_killed", "limits_ignored", "memory_limit_refusal", "podman_ulimits",
           "registries_conf", "socket_peer_pid", "ulimit_refused"]

#: What rootful podman 4 asks for when no ulimit is given (define.RLimitDefaultValue etc.).
PODMAN_DEFAULT_ULIMITS = {"nofile": 1048576, "nproc": 4194304}

#: Linux RLIMIT_* numbers as runc prints them in "error setting rlimit type N".
RLIMIT_NAMES = {0: "cpu", 1: "fsize", 2: "data", 3: "stack", 4: "core", 5: "rss", 6: "nproc",
                7: "nofile", 8: "memlock", 9: "as", 10: "locks", 11: "sigpending",
                12: "msgqueue", 13: "nice", 14: "rtprio", 15: "rttime"}

_RLIMIT_ERROR = re.compile(r"error setting rlimit type (\d+)")
_CATATONIT_ENOENT = re.compile(r"catatonit:\d+\): failed to exec pid1: No such file or directory")


_LIMIT_ROWS = {"nofile": "Max open files", "nproc": "Max processes"}


def socket_peer_pid(path: str) -> int | None:
    """The pid of the process listening on unix socket *path* (SO_PEERCRED), if it can tell."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return pid if pid > 1 else None  # pid 1: socket activation, not the service itself


def _hard_limits(pid: int | None) -> dict[str, int]:
    """Hard nofile/nproc of *pid* (from /proc), else of this process; -1 is unlimited."""
    if pid is not None:
        try:
            rows = Path(f"/proc/{pid}/limits").read_text().splitlines()
            found = {}
            for name, title in _LIMIT_ROWS.items():
                (row,) = [r for r in rows if r.startswith(title)]
                hard = row[len(title):].split()[1]
                found[name] = -1 if hard == "unlimited" else int(hard)
            return found
        except (OSError, ValueError):
            pass
    return {name: resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
            for name in _LIMIT_ROWS}


def podman_ulimits(service_pid: int | None = None) -> list[Ulimit]:
    """nofile and nproc at podman's defaults, capped at the service's hard limits.

    *service_pid* is the podman service's pid when it runs on this host; otherwise this
    process's limits stand in for it.
    """
    hard = _hard_limits(service_pid)
    with contextlib.suppress(OSError, ValueError):
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        hard["nproc"] = pid_max if hard["nproc"] < 0 else min(hard["nproc"], pid_max)
    limits = []
    for name, default in PODMAN_DEFAULT_ULIMITS.items():
        value = default if hard[name] < 0 else min(hard[name], default)
        limits.append(Ulimit(name=name, soft=value, hard=value))
    return limits


def ulimit_refused(text: str, target: str, image: str, platform: object,
                   asked: list[Ulimit] | None) -> UlimitRefused | None:
    """The error for runc's "error setting rlimit type N" in *text*, or None."""
    match = _RLIMIT_ERROR.search(text)
    if match is None:
        return None
    number = int(match.group(1))
    name = RLIMIT_NAMES.get(number, f"#{number}")
    wanted = next((f"{u.name}={u.soft}:{u.hard}" for u in asked or () if u.name == name), "")
    flag = {"nofile": "-n", "nproc": "-u"}.get(name, "-a")
    return UlimitRefused(
        f"engine {target} refused to start {image} for {platform}: runc could not set "
        f"RLIMIT_{name.upper()} (rlimit type {number}, the {name} ulimit"
        + (f"; asked {wanted}, the hard limit it seemed to have" if wanted else "")
        + "): the engine's service runs with a lower hard limit than that, and its own limits "
        "could not be read (another host or user). Fix: start the podman service from a shell "
        f"whose `ulimit -H{flag[1:]}` is at least that (or raise LimitNOFILE=/LimitNPROC= in "
        "its systemd unit), or unset CONTAINER_HOST and let --engine=podman start a private "
        "service, whose limits are read."
    )


def init_exit_code(exit_code: int, stderr: str) -> int:
    """catatonit's exit 1 for a command it could not find is 127, as for docker-init."""
    if exit_code == 1 and _CATATONIT_ENOENT.search(stderr):
        return 127
    return exit_code


def kernel_oom_killed(container_id: str) -> bool:
    """Whether the kernel log has an OOM kill in the cgroup of *container_id* (local engines).

    Reads ``/dev/kmsg`` without blocking; False when it cannot be read (not root,
    ``dmesg_restrict``) -- the run then stays an exit 137 without the OOM classification.
    """
    if not container_id:
        return False
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    found = False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # end of the ring buffer
            except BrokenPipeError:  # a record was overwritten while reading: go on
                continue
            except OSError:
                break
            if not record:
                break
            if b"oom" in record and container_id.encode() in record:
                found = True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return found


def limits_ignored(client: Any) -> bool:
    """Whether this podman is rootless on cgroup v1, where it ignores memory limits."""
    try:
        response = client.api.get(client.api.base_url + "/v4.0.0/libpod/info", timeout=10)
        host = response.json()["host"]
        return bool(host["security"]["rootless"]) and str(host["cgroupVersion"]) == "v1"
    except Exception:  # an old podman without libpod info: nothing to tell
        return False


def memory_limit_refusal(target: str, image: str, platform: object) -> RunnerError:
    """The error for an emulated run on an engine that would ignore its memory limit."""
    return RunnerError(
        f"engine {target} is rootless podman on a cgroup v1 host, which ignores memory limits; "
        f"{image} would run emulated as {platform} without one, and a process under qemu-user "
        "can commit its whole address-space reservation (TESTBED.md: MariaDB took the machine). "
        "Fix: use rootful podman (--engine=podman as root) or Docker, boot the host with cgroup "
        "v2 (systemd.unified_cgroup_hierarchy=1) where rootless podman enforces limits, or run "
        "natively (--arch-host)."
    )


#: Loopback names marked insecure for a private podman service, as Docker treats 127.0.0.0/8.
#: A location without a port matches every port of that host in containers/image's prefix
#: rule; addresses of 127.0.0.0/8 other than 127.0.0.1 must be named (with their port).
LOOPBACK_REGISTRIES = ("localhost", "127.0.0.1", "[::1]")
SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")


def registries_conf(
    insecure: Iterable[str] = (), system: Path = SYSTEM_REGISTRIES_CONF
) -> str | None:
    """A ``registries.conf`` for a private podman service: *system*'s text, then a
    ``[[registry]]`` table marking each loopback host and each of *insecure* insecure.

    Hosts the system file already configures keep its entry (a location may appear once per
    file); drop-ins under ``registries.conf.d`` still apply after this file, as for the system's.
    None when the system file cannot be extended: unreadable TOML, or the v1 format, which
    cannot be mixed with v2 tables (the service then runs with the system's configuration).
    """
    try:
        text = system.read_text()
    except FileNotFoundError:
        text = ""
    except OSError:
        return None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    if "registries" in parsed:  # v1: [registries.search] / [registries.insecure]
        return None
    known = {str(entry.get("location", entry.get("prefix", "")))
             for entry in parsed.get("registry", ()) if isinstance(entry, dict)}
    wanted = [h for h in dict.fromkeys((*LOOPBACK_REGISTRIES, *insecure)) if h and h not in known]
    tables = "".join(
        f'\n[[registry]]\nlocation = "{_toml_escape(host)}"\ninsecure = true\n' for host in wanted
    )
    header = (f"# pytest-multiarch: {system} and, after it, the plain-HTTP registries of this "
              "session (loopback, --multiarch-insecure-registry)\n")
    return header + text.rstrip("\n") + "\n" + tables


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
