"""How much slower an emulated architecture is here, to scale readiness timeouts.

A small fixed CPU workload (a shell arithmetic loop — every image with a POSIX ``sh`` can run it)
runs in the native variant and in the emulated one; the shell's own ``times`` before and after
the loop give the CPU seconds it took, so neither container start-up nor other load on the
machine (wall time on a busy 2-core CI runner varies several-fold) enters the figure::

    factor = emulated CPU seconds / native CPU seconds

Measured once per architecture and qemu version, and cached in
``CACHE/emulation/<arch>-<key>.json``: a new qemu (or another workload) is a new key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_multiarch._fs import cache_root, write_atomic
from pytest_multiarch.errors import MultiarchError, UsageError
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Runner

WORKLOAD = "times; i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; times; echo $i"
ITERATIONS = 50_000
#: Used when nothing could be measured: the middle of what CI reports for qemu-user (4–19×).
DEFAULT_FACTOR = 10.0
_CACHE_VERSION = 2


@dataclass(frozen=True, slots=True)
class EmulationFactor:
    """How many times slower *platform* runs than native; ``source`` says how we know."""

    platform: str
    factor: float
    source: str  # "native", "measured", "cache", "default"
    qemu_version: str | None = None
    native_seconds: float | None = None
    emulated_seconds: float | None = None
    reason: str = ""

    def scale(self, base: float) -> float:
        """*base* seconds scaled by this factor (never below *base*)."""
        return scale_timeout(base, self.factor)


def scale_timeout(base: float, factor: float) -> float:
    """A timeout of *base* seconds natively, for a platform *factor* times slower."""
    return base * max(1.0, factor)


def run_deadline(timeout: float | None, base: float, factor: float) -> float:
    """A run's deadline: *timeout* as given, else *base* native seconds scaled by *factor*.

    Every run gets one (a hung emulated process must not hold a CI job until its own timeout).
    """
    chosen = scale_timeout(base, factor) if timeout is None else timeout
    if not isinstance(chosen, int | float) or not chosen > 0 or chosen != chosen:
        raise UsageError(f"invalid run timeout {timeout!r}; use a number of seconds above 0")
    return float(chosen)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/emulation`` (read per call, never at import)."""
    return cache_root("emulation")


def cache_file(cache_dir: Path, platform: Platform, qemu_version: str | None,
               iterations: int = ITERATIONS) -> Path:
    """Where the factor of *platform* under *qemu_version* is cached."""
    key = hashlib.sha256(
        f"{_CACHE_VERSION}|{qemu_version}|{WORKLOAD}|{iterations}".encode()
    ).hexdigest()[:16]
    return cache_dir / f"{platform.arch_name.replace('/', '-')}-{key}.json"


_TIMES = re.compile(r"^(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s$", re.M)


def _loop_seconds(runner: Runner, image: str, platform: Platform, iterations: int,
                  timeout: float) -> float:
    """CPU seconds (user + system) the shell spent in the loop, from ``times`` around it."""
    result = runner.run(image, platform, ["sh", "-c", WORKLOAD.format(n=iterations)],
                        timeout=timeout)
    stamps = [int(m[0]) * 60 + float(m[1]) + int(m[2]) * 60 + float(m[3])
              for m in _TIMES.findall(result.stdout)]
    if result.exit_code != 0 or len(stamps) != 4 or not result.stdout.strip().endswith(
        str(iterations)
    ):
        raise MultiarchError(
            f"the emulation-factor workload failed in {image} on {platform}: exit "
            f"{result.exit_code}, output {result.stdout.strip()[:200]!r}, "
            f"{result.stderr.strip()[:200]!r}"
        )
    # times prints the shell's own line, then its children's: take the shell's before/after.
    return max(stamps[2] - stamps[0], 0.01)


def measure(
    runner: Runner,
    platform: Platform,
    *,
    emulated_image: str,
    native_image: str,
    native: Platform | None = None,
    cache_dir: Path | None = None,
    iterations: int = ITERATIONS,
    timeout: float = 300.0,
) -> EmulationFactor:
    """The emulation factor of *platform*, from the cache or measured now (then cached).

    *emulated_image* and *native_image* are pinned variants (``repo@sha256:…``) of an image with
    ``sh``, for *platform* and for the host (*native*) respectively.  A native platform is 1.0
    without measuring.  When the workload cannot run, :data:`DEFAULT_FACTOR` is returned with
    ``source="default"`` and the reason.
    """
    native = native or Platform.host()
    if binfmt.is_native(platform, native):
        return EmulationFactor(platform.arch_name, 1.0, "native")
    version = binfmt.qemu_version(platform)
    path = cache_file(cache_dir or default_cache_dir(), platform, version, iterations)
    try:
        cached = json.loads(path.read_text())
        return EmulationFactor(**{**cached, "source": "cache"})
    except (OSError, ValueError, TypeError):
        pass
    try:
        # Native is cheap: 4x the iterations there keeps the 10 ms tick of ``times`` small.
        native_s = _loop_seconds(runner, native_image, native, 4 * iterations, timeout) / 4
        emulated_s = _loop_seconds(runner, emulated_image, platform, iterations, timeout)
    except MultiarchError as exc:
        return EmulationFactor(platform.arch_name, DEFAULT_FACTOR, "default", version,
                               reason=str(exc))
    factor = round(max(1.0, emulated_s / native_s), 2)
    found = EmulationFactor(platform.arch_name, factor, "measured", version,
                            round(native_s, 4), round(emulated_s, 4))
    write_atomic(path, json.dumps(asdict(found)))
    return found

