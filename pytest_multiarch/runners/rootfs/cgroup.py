"""A memory cgroup per rootfs run: a hard limit without swap, OOM detection, killing the tree.

cgroup v2 (``memory.max``) or v1's memory hierarchy (``memory.limit_in_bytes``); only root may
make one.  Without one an emulated run is refused (see :mod:`.runner`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["MemoryCgroup"]


class MemoryCgroup:
    """A memory cgroup (v2, or v1's memory hierarchy) with a hard limit and no swap."""

    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    @classmethod
    def create(cls, name: str, limit: int) -> MemoryCgroup | None:
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
