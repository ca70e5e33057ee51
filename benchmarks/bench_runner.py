"""Per-run overhead of the engine runner against bare ``docker run``; what sharing a container buys.

    .venv/bin/python benchmarks/bench_runner.py [-n 20] [--arch arm64]

Three ways to run ``uname -m`` in the corpus' busybox variant (emulated under qemu-user on this
x86_64 test bed), N times each:

* ``runner.run``   — ``EngineRunner.run(IMAGE@DIGEST, platform, ["uname", "-m"])``: a fresh,
                     labelled, memory-limited container per call, output split, removed after;
* ``docker run``   — ``docker run --rm --platform linux/ARCH IMAGE@DIGEST uname -m`` (the CLI);
* ``exec shared``  — ``container.exec(["uname", "-m"])`` in one started, session-scoped container.

The first two alternate, so drift on a busy machine hits both alike.  Goals (issue 5): runner.run
within 10% of docker run; a shared container at least 3x faster than docker run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.docker.engine import EngineRunner

STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))


def timed(action: Callable[[], str], expected: str) -> float:
    started = time.perf_counter()
    out = action()
    elapsed = time.perf_counter() - started
    if out.strip() != expected:
        sys.exit(f"unexpected output {out!r}, wanted {expected!r}")
    return elapsed


def row(name: str, samples: list[float], reference: float | None) -> str:
    mean = statistics.fmean(samples)
    p90 = sorted(samples)[max(0, int(len(samples) * 0.9) - 1)]
    ratio = f"{mean / reference:6.2f}x" if reference else "     - "
    return (f"{name:<14} {mean * 1000:8.1f} {statistics.median(samples) * 1000:8.1f} "
            f"{p90 * 1000:8.1f} {min(samples) * 1000:8.1f}   {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs per method (default 20)")
    parser.add_argument("--arch", default="arm64", help="corpus variant to run (default arm64)")
    args = parser.parse_args()

    corpus_path = STATE / "corpus.json"
    if not corpus_path.exists():
        sys.exit(f"no {corpus_path}: run scripts/provision-host first")
    corpus = json.loads(corpus_path.read_text())
    platform = Platform.parse(args.arch)
    entry = corpus["busybox"]
    digest = entry["digests"][str(platform)]
    image = f"{corpus['registry']['address']}/{entry['repository']}@{digest}"
    expected = platform.info.uname

    runner = EngineRunner(session=Session.new(f"bench-{os.getpid()}"))
    try:
        runner.ensure_image(image, platform)  # pull outside the timings
        docker_cmd = ["docker", "run", "--rm", "--platform", str(platform), image, "uname", "-m"]

        def via_runner() -> str:
            return runner.run(image, platform, ["uname", "-m"]).stdout

        def via_docker() -> str:
            return subprocess.run(docker_cmd, capture_output=True, text=True, check=True).stdout

        for warm in (via_runner, via_docker):
            timed(warm, expected)
        runs: list[float] = []
        bare: list[float] = []
        for _ in range(args.n):
            runs.append(timed(via_runner, expected))
            bare.append(timed(via_docker, expected))

        started = time.perf_counter()
        box = runner.start(image, platform, ["sleep", "3600"])
        start_cost = time.perf_counter() - started
        try:
            timed(lambda: box.exec(["uname", "-m"]).stdout, expected)
            execs = [timed(lambda: box.exec(["uname", "-m"]).stdout, expected)
                     for _ in range(args.n)]
        finally:
            box.stop(timeout=1)
    finally:
        runner.close()

    reference = statistics.fmean(bare)
    print(f"uname -m in {image} ({platform}, {runner.describe(platform)}), n={args.n}")
    print(f"{'method':<14} {'mean ms':>8} {'median':>8} {'p90':>8} {'min':>8}   vs docker run")
    print(row("docker run", bare, reference))
    print(row("runner.run", runs, reference))
    print(row("exec shared", execs, reference))
    overhead = (statistics.fmean(runs) / reference - 1) * 100
    speedup = reference / statistics.fmean(execs)
    print(f"runner.run overhead over docker run: {overhead:+.1f}% (goal <= +10%)")
    print(f"shared container: {speedup:.1f}x faster than docker run (goal >= 3x); "
          f"one-time start {start_cost * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
