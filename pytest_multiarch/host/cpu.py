"""qemu-user CPU models: which this qemu has, and which one each platform level runs on.

qemu-user's default model is ``max`` (ppc64le: POWER9), the newest instruction set it knows, so
a binary built for a newer CPU than its platform promises passes there and dies with
``Illegal instruction`` on the machines users deploy to.  By default every emulated platform
therefore runs on the *oldest* model that implements the level its platform promises
(:data:`DEFAULTS`); ``--arch-cpu=ARCH=MODEL`` overrides it.  The model reaches qemu through the
``QEMU_CPU`` environment variable (binfmt_misc, inside containers) or ``-cpu`` (proot).

What qemu 7.2 (Debian bookworm) can and cannot model was measured on the test bed; see the
README's CPU-model section.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_multiarch.errors import UnknownPlatformError, UsageError
from pytest_multiarch.platforms import Platform, arch_info, valid_names

#: The model that restores qemu's own default behaviour for every arch.
MAX = "max"


@dataclass(frozen=True, slots=True)
class DefaultModel:
    """The model a platform level runs on by default, and why (shown in the header)."""

    model: str  # "" means: qemu's own default (no QEMU_CPU)
    note: str = ""  # said in the header when the model is not an exact fit for the level


_ARM64_NO_MODEL = "qemu 7.2 has no ARMv{level} model: nearest not below it is max"

#: (architecture, variant) → the oldest model implementing exactly that level.
DEFAULTS: dict[tuple[str, str], DefaultModel] = {
    # ARMv8.0: Raspberry Pi 4, Graviton1 (Cortex-A72); the Pi 3's Cortex-A53 is v8.0 as well.
    ("arm64", ""): DefaultModel("cortex-a72"),
    # No v8.1-only core in qemu: the nearest above is a v8.2 one (Graviton2, Ampere Altra).
    ("arm64", "v8.1"): DefaultModel(
        "neoverse-n1", "qemu 7.2 has no ARMv8.1 model: nearest not below it is neoverse-n1 (v8.2)"
    ),
    ("arm64", "v8.2"): DefaultModel("neoverse-n1"),
    **{
        ("arm64", variant): DefaultModel(MAX, _ARM64_NO_MODEL.format(level=variant[1:]))
        for variant in (*(f"v8.{n}" for n in range(3, 10)), *(f"v9.{n}" for n in range(6)))
    },
    ("arm", "v5"): DefaultModel("arm926"),
    ("arm", "v6"): DefaultModel("arm1176"),  # Raspberry Pi Zero / 1
    # The oldest ARMv7-A core: no integer divide in ARM state, which armv7-a does not promise.
    ("arm", "v7"): DefaultModel("cortex-a8"),
    ("arm", "v8"): DefaultModel(MAX, "qemu 7.2 has no 32-bit ARMv8 model: nearest is max"),
    # POWER8 is the ELFv2 baseline of Debian, Ubuntu and Fedora; qemu's default is POWER9.
    ("ppc64le", ""): DefaultModel("power8"),
    # z13 is the oldest generation current distributions support (Ubuntu's and RHEL 8's
    # baseline), but qemu 7.2's TCG refuses every named generation from z10 on and, in user
    # mode, gates only the vector facility: no older generation can be emulated.
    ("s390x", ""): DefaultModel(
        MAX, "qemu 7.2 cannot emulate z13 (TCG lacks its crypto functions): max, so "
             "instructions newer than z13 are not caught"
    ),
}


@dataclass(frozen=True, slots=True)
class CpuChoice:
    """The CPU model one platform runs on, where that choice came from, and any caveat."""

    platform: Platform
    model: str  # "" = qemu's own default
    source: str  # "default", "option", "env", "ini"
    note: str = ""

    @property
    def env(self) -> dict[str, str]:
        """``{"QEMU_CPU": model}``, or nothing for qemu's own default."""
        return {"QEMU_CPU": self.model} if self.model else {}

    @property
    def shown(self) -> str:
        """The model as reports name it (``qemu default`` when none is set)."""
        return self.model or "qemu default"

    def describe(self) -> str:
        """``arm64=cortex-a72 (default)`` for the header, with its caveat."""
        note = f"; {self.note}" if self.note else ""
        return f"{self.platform.arch_name}={self.shown} ({self.source}{note})"


def qemu_binary(platform: Platform) -> str:
    """``qemu-aarch64-static`` …: the binary whose models *platform* can use."""
    return f"qemu-{platform.info.qemu}-static"


_PREFIXED = re.compile(r"^(?:PowerPC|s390|x86)\s+(\S+)")


def parse_models(text: str) -> tuple[str, ...]:
    """Model names from ``qemu-ARCH-static -cpu help`` output (every arch's format)."""
    names: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("Available", "Recognized")):
            if line.startswith("Recognized"):
                break  # x86 lists CPUID flags after the models
            continue
        match = _PREFIXED.match(line)
        name = match.group(1) if match else line.split()[0]
        if name not in names:
            names.append(name)
    return tuple(names)


@functools.cache
def _models_of(binary: str) -> tuple[str, ...]:
    path = shutil.which(binary)
    if path is None:
        return ()
    try:
        done = subprocess.run([path, "-cpu", "help"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return parse_models(done.stdout)


def list_models(platform: Platform) -> tuple[str, ...]:
    """The models this host's qemu-user offers for *platform* (cached per process); empty
    when that qemu is not installed."""
    return _models_of(qemu_binary(platform))


def max_model(platform: Platform) -> str:
    """qemu's newest model for *platform*: ``max``, or "" (its own default) where it has none
    (ppc64le, whose default is POWER9)."""
    return MAX if MAX in list_models(platform) else ""


def default_for(platform: Platform) -> DefaultModel:
    """The default model of *platform*'s level (qemu's own default for arches without one)."""
    return DEFAULTS.get((platform.architecture, platform.variant), DefaultModel(""))


def override_key(text: str) -> str:
    """The key an ``--arch-cpu`` entry applies to: ``arm64``, ``arm`` (every arm variant) or an
    exact ``arm/v6``, ``arm64/v8.2``.  Raises :class:`UnknownPlatformError`."""
    name = text.strip().lower()
    if "/" in name:
        return Platform.parse(name).arch_name
    return arch_info(name).arch


def choose(platform: Platform, overrides: Mapping[str, str] | None = None,
           source: str = "option") -> CpuChoice:
    """The model *platform* runs on: an override (exact ``arch/variant`` key first, then the
    arch), else its level's default."""
    for key in (platform.arch_name, platform.architecture):
        if overrides and key in overrides:
            return CpuChoice(platform, overrides[key], source)
    default = default_for(platform)
    return CpuChoice(platform, default.model, "default", default.note)


def parse_overrides(entries: Iterable[str], *, what: str = "--arch-cpu") -> dict[str, str]:
    """``["arm64=cortex-a76", "arm=arm1176"]`` → ``{"arm64": "cortex-a76", …}``, each model
    checked against this qemu's list; :class:`UsageError` naming what was wrong otherwise."""
    result: dict[str, str] = {}
    for raw in entries:
        for entry in (e.strip() for e in raw.split(",")):
            if not entry:
                continue
            arch, sep, model = entry.partition("=")
            if not sep or not arch.strip() or not model.strip():
                raise UsageError(
                    f"{what} entry {entry!r} is not ARCH=MODEL, e.g. arm64=cortex-a72 or "
                    "arm64=max"
                )
            try:
                key = override_key(arch)
            except UnknownPlatformError:
                raise UsageError(
                    f"{what} entry {entry!r} names an unknown architecture {arch.strip()!r}; "
                    f"valid: {', '.join(valid_names())}"
                ) from None
            result[key] = check_model(Platform.parse(key), model.strip(), what=what)
    return result


def check_model(platform: Platform, model: str, *, what: str = "--arch-cpu") -> str:
    """*model* if this host's qemu has it for *platform*; else a :class:`UsageError` listing
    the models it has."""
    models = list_models(platform)
    if not models:
        raise UsageError(
            f"{what} {platform.architecture}={model}: {qemu_binary(platform)} is not installed, "
            "so no CPU model can be checked or used. Fix: apt-get install qemu-user-static"
        )
    if model.lower() == MAX and MAX not in models:
        return ""  # ppc64le has no `max`: its own default (POWER9) is today's behaviour
    if model not in models and model.lower() not in models:
        raise UsageError(
            f"{what} {platform.architecture}={model}: {qemu_binary(platform)} has no CPU model "
            f"{model!r}; it has: {', '.join(models)}"
        )
    return model if model in models else model.lower()


@dataclass(frozen=True, slots=True)
class HostCpu:
    """A native host's CPU, read from its ``/proc/cpuinfo``: a name and the level it reaches."""

    name: str
    platform: Platform  # the arch at the level this CPU implements (arm64/v8.2, amd64/v3 …)

    def newer_than(self, promised: Platform) -> bool:
        """Whether this CPU implements more than *promised*: a pass here does not cover the
        older machines the platform also promises to run on."""
        return self.platform.level > promised.level >= 0


# Arm's "CPU part" numbers (implementer 0x41) of cores people deploy on.
_ARM_PARTS = {0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55",
              0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD0B: "Cortex-A76",
              0xD0C: "Neoverse-N1", 0xD40: "Neoverse-V1", 0xD49: "Neoverse-N2",
              0xD4F: "Neoverse-V2"}
_X86_LEVELS = (("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
               ("v3", {"avx2", "bmi1", "bmi2", "fma", "movbe", "abm"}),
               ("v2", {"sse4_2", "popcnt", "ssse3", "cx16", "lahf_lm"}))


def describe_cpuinfo(text: str, arch: Platform) -> HostCpu:
    """What a Linux ``/proc/cpuinfo`` says about the first CPU (the name and the level its
    feature flags reach; the baseline when they say nothing we know)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() not in fields:
            fields[key.strip().lower()] = value.strip()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    level = ""
    if arch.architecture == "amd64":
        level = next((lv for lv, need in _X86_LEVELS if need <= flags), "")
        name = fields.get("model name", "x86-64")
    elif arch.architecture == "arm64":
        if "sve2" in flags:
            level = "v9.0"
        elif {"ilrcpc", "flagm", "dit"} <= flags:
            level = "v8.4"
        elif "atomics" in flags and ({"dcpop", "asimddp"} & flags):
            level = "v8.2"
        elif "atomics" in flags:
            level = "v8.1"
        try:
            part = _ARM_PARTS.get(int(fields.get("cpu part", ""), 16), "")
        except ValueError:
            part = ""
        name = part or f"arm64 CPU part {fields.get('cpu part', '?')}"
    else:
        name = fields.get("cpu") or fields.get("model name") or fields.get("processor", "?")
    return HostCpu(name, Platform.from_parts(arch.os, arch.architecture, level)
                   if level else Platform(arch.os, arch.architecture, arch.variant))
