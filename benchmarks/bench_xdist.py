#!/usr/bin/env python3
"""Parallel archs: the same emulation-bound corpus suite with `-n 3` against `-n 0`.

Each arch's tests start one session-scoped container and run a CPU-bound shell loop in it a few
times (under qemu-user for arm64 and s390x), plus a fresh `multiarch_run` per test. The figure
that matters is the wall-time ratio, and that both runs give the same outcomes.

Run: .venv/bin/python benchmarks/bench_xdist.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))

SUITE = '''
import pytest

REF = {ref!r}
LOOP = "i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; uname -m"


@pytest.mark.parametrize("n", range({tests}))
def test_cpu_in_shared_container(arch, multiarch_shared_container, n):
    box = multiarch_shared_container(REF, cmd=["sleep", "600"])
    result = box.exec(["sh", "-c", LOOP])
    assert result.exit_code == 0
    assert result.stdout.strip() == arch.info.uname


def test_fresh_container(arch, multiarch_run):
    result = multiarch_run(REF, ["sh", "-c", LOOP], check=True)
    assert result.stdout.strip() == arch.info.uname
'''


def run(workdir: Path, workers: int, report: Path) -> float:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--arch-required",
            "--arch=amd64,arm64,s390x", f"--multiarch-report={report}", str(workdir)]
    if workers:
        args[3:3] = ["-n", str(workers)]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=workdir, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"pytest -n {workers} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return elapsed


def outcomes(report: Path) -> dict[str, str]:
    doc = json.loads(report.read_text())
    return {
        f"{arch} {check['test']}": check["outcome"]
        for arch, entry in doc["images"]["(tests)"].items() for check in entry["checks"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tests", type=int, default=4)
    parser.add_argument("--loops", type=int, default=150000)
    opts = parser.parse_args()
    corpus = json.loads((STATE / "corpus.json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-xdist-") as tmp:
        work = Path(tmp)
        (work / "test_bench.py").write_text(
            SUITE.format(ref=corpus["busybox"]["ref"], loops=opts.loops, tests=opts.tests)
        )
        serial, parallel = [], []
        for _ in range(opts.rounds):
            serial.append(run(work, 0, work / "serial.json"))
            parallel.append(run(work, 3, work / "parallel.json"))
        same = outcomes(work / "serial.json") == outcomes(work / "parallel.json")
    best_s, best_p = min(serial), min(parallel)
    print(f"{'mode':<28}{'wall s (best of ' + str(opts.rounds) + ')':>24}")
    print(f"{'pytest -n 0 (archs in turn)':<28}{best_s:>24.1f}")
    print(f"{'pytest -n 3 (arch/worker)':<28}{best_p:>24.1f}")
    print(f"speed-up: {best_s / best_p:.2f}x  (goal >= 2x); identical outcomes: {same}")
    print(f"note: {os.cpu_count()} cores; CPU-bound emulation of 2 foreign archs on 2 cores "
          "cannot exceed 2x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
