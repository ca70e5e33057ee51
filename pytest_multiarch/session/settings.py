"""The validated settings of one session: what the plugin was asked to do and where each value
came from. Plain data (no pytest): :mod:`pytest_multiarch.plugin.options` fills it from options,
environment variables and ini keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import DEFAULT_MEM_LIMIT, DEFAULT_RUN_TIMEOUT

T = TypeVar("T")

ENGINES = ("auto", "docker", "podman", "rootfs")
__all__ = ["DEFAULT_MEM_LIMIT", "DEFAULT_RUN_TIMEOUT", "DEFAULT_SMOKE_TIMEOUT", "ENGINES",
           "MultiarchConfig", "Sourced"]
#: Native seconds the gate's smoke command runs before it counts as a service that stays up.
DEFAULT_SMOKE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Sourced(Generic[T]):
    """A value and where it came from: ``option``, ``env NAME``, ``ini NAME`` or ``default``."""

    value: T
    source: str


@dataclass(frozen=True, slots=True)
class MultiarchConfig:
    """Everything the plugin was asked to do, after validation."""

    archs: Sourced[tuple[Platform, ...]]
    arch_required: bool
    images: tuple[str, ...]
    arch_hosts: dict[Platform, str] = field(default_factory=dict)
    engine: Sourced[str] = field(default_factory=lambda: Sourced("auto", "default"))
    mem_limit: str = DEFAULT_MEM_LIMIT
    #: Native seconds a run may take, scaled by the emulation factor (--multiarch-run-timeout).
    run_timeout: Sourced[float] = field(
        default_factory=lambda: Sourced(DEFAULT_RUN_TIMEOUT, "default"))
    allow_foreign: tuple[str, ...] = ()
    smoke_cmd: tuple[str, ...] | None = None
    report_path: Path | None = None
    baseline_path: Path | None = None
    changed_only: bool = False
    insecure_registries: tuple[str, ...] = ()
    cache_dir: Path | None = None
    reference_arch: Platform | None = None
    #: ``--multiarch-gate-only``: no test files are collected, only the generated gate runs
    gate_only: bool = False
    smoke_timeout: float = DEFAULT_SMOKE_TIMEOUT
    #: why ``--multiarch-cache-dir`` cannot be used (the run goes on without a cache), or ""
    cache_problem: str = ""
    # Bounds of an unpacked rootfs (runners/rootfs/unpack.py); None: that module's defaults.
    unpack_max_bytes: Sourced[int] | None = None
    unpack_max_files: Sourced[int] | None = None
    #: --arch-cpu overrides: arch (or arch/variant) → qemu CPU model, checked against this qemu.
    arch_cpus: Sourced[dict[str, str]] = field(default_factory=lambda: Sourced({}, "default"))
    #: --multiarch-expect-platforms: the index must list exactly these (None: not checked)
    expect_platforms_from: Sourced[tuple[Platform, ...]] | None = None
    #: --multiarch-require-attestations: kinds every variant must carry
    require_attestations_from: Sourced[tuple[str, ...]] | None = None
    #: --multiarch-allow-package: package-name globs whose version may differ across archs
    allow_packages: tuple[str, ...] = ()

    @property
    def expect_platforms(self) -> tuple[Platform, ...] | None:
        return self.expect_platforms_from.value if self.expect_platforms_from else None

    @property
    def require_attestations(self) -> tuple[str, ...]:
        return self.require_attestations_from.value if self.require_attestations_from else ()
