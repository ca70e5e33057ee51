"""What the shipped runners (the engine's and the rootfs one) share, apart from the protocol.

:class:`RunnerBase` holds the session whose labels a runner puts on what it creates, the default
memory limit, each run's deadline (native seconds, scaled by the platform's emulation factor)
and the qemu CPU model each platform runs on (``--arch-cpu``, else its level's default).  A
runner plugged in through the hook needs none of it: it only has to satisfy
:class:`~pytest_multiarch.runners.base.Runner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pytest_multiarch.host import cpu
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import DEFAULT_RUN_TIMEOUT, Session, parse_mem_limit
from pytest_multiarch.runners.emulation import DEFAULT_FACTOR, run_deadline

__all__ = ["RunnerBase"]


class RunnerBase:
    """Session, memory limit, scaled deadlines and CPU models of a runner; subclasses say which
    platforms they emulate (:meth:`is_emulated`) and what :meth:`close` removes."""

    def __init__(
        self, *, session: Session | None, mem_limit: str, run_timeout: float,
        cpu_models: Mapping[str, str] | None, cpu_source: str,
    ) -> None:
        self.run_timeout = run_deadline(run_timeout, DEFAULT_RUN_TIMEOUT, 1.0)  # validates it
        self._factors: dict[str, float] = {}
        self.session = session or Session.new()
        self.mem_limit = mem_limit
        parse_mem_limit(mem_limit)  # a bad value fails here, not at the first run
        # --arch-cpu overrides (arch or arch/variant → qemu model); the rest run on the default
        # model of their platform's level (host.cpu.DEFAULTS).
        self.cpu_models = dict(cpu_models or {})
        self.cpu_source = cpu_source

    def is_emulated(self, platform: Platform) -> bool:
        """Whether *platform* runs under qemu-user here."""
        raise NotImplementedError

    def cpu_choice(self, platform: Platform) -> cpu.CpuChoice | None:
        """The qemu CPU model *platform* runs on here; None when it runs natively."""
        if not self.is_emulated(platform):
            return None
        return cpu.choose(platform, self.cpu_models, self.cpu_source)

    def chosen_model(self, platform: Platform) -> str:
        """The model of :meth:`cpu_choice` ("" when *platform* runs natively)."""
        choice = self.cpu_choice(platform)
        return choice.model if choice is not None else ""

    def run_timeout_for(self, platform: Platform, timeout: float | None = None) -> float:
        """*timeout* if given, else this runner's default deadline scaled for *platform*."""
        return run_deadline(timeout, self.run_timeout,
                            self.emulation_factor(platform) if self.is_emulated(platform) else 1.0)

    def emulation_factor(self, platform: Platform) -> float:
        """The measured factor of *platform* (:meth:`set_emulation_factor`), else the default."""
        return self._factors.get(platform.arch_name, DEFAULT_FACTOR)

    def set_emulation_factor(self, platform: Platform, factor: float) -> None:
        """Scale default deadlines of *platform* by a measured emulation factor."""
        self._factors[platform.arch_name] = max(1.0, factor)

    def close(self) -> None:
        """Remove what this runner's session left; nothing here (a runner overrides it)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
