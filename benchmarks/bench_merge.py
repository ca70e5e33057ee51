"""Merging 5 shards × 2,000 tests: `pytest-multiarch merge` against `junitparser merge` of the same
results as JUnit files (what a user merges by hand today), side by side in one run; then merge
time against the number of tests, which must grow linearly.

The shards are real: five pytest processes (one per arch, like five CI jobs) run a generated
suite of --tests trivial arch tests and write both --multiarch-report and --junitxml.  The
linearity figures merge prefixes and doubled copies of those shards in process.

    .venv/bin/python benchmarks/bench_merge.py [--tests 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_multiarch.session.merge import merge_shards
from pytest_multiarch.session.shard import Shard, load_shard

ARCHS = ("amd64", "arm64", "s390x", "ppc64le", "arm")
SUITE = """
import pytest

@pytest.mark.parametrize("n", range({tests}))
def test_case(arch, n):
    assert n >= 0
"""


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _make_shards(work: Path, tests: int) -> tuple[list[Path], list[Path]]:
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n")
    (work / "test_suite.py").write_text(SUITE.format(tests=tests))
    shards, junits = [], []
    for arch in ARCHS:
        shard, junit = work / f"{arch}.json", work / f"{arch}.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", f"--arch={arch}",
                        f"--multiarch-report={shard}", f"--junitxml={junit}"],
                       cwd=work, check=True, capture_output=True, timeout=900)
        shards.append(shard)
        junits.append(junit)
    return shards, junits


def _resized(shard: Shard, tests: int) -> Shard:
    """*shard* with its first *tests* tests (or more, by copies with new ids)."""
    doc: dict[str, Any] = copy.deepcopy(dict(shard.document))
    for arch, info in doc["archs"].items():
        base = info["collected"]
        info["collected"] = [base[i % len(base)] + (f"#{i // len(base)}" if i >= len(base) else "")
                             for i in range(tests)]
        entry = doc["images"]["(tests)"][arch]
        checks = entry["checks"]
        entry["checks"] = [{**checks[i % len(checks)], "test": info["collected"][i]}
                           for i in range(tests)]
    return Shard(shard.path, doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("pytest-multiarch")
    junitparser = shutil.which("junitparser") or str(Path(sys.executable).with_name("junitparser"))
    if not Path(junitparser).exists():
        print("junitparser is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        shards, junits = _make_shards(work, args.tests)
        print(f"made {len(shards)} real shards x {args.tests} tests in "
              f"{time.perf_counter() - started:.1f}s ({sum(p.stat().st_size for p in shards) >> 10}"
              f" KiB JSON, {sum(p.stat().st_size for p in junits) >> 10} KiB JUnit)")

        def ours() -> None:
            subprocess.run([str(script), "merge", *map(str, shards),
                            f"--require-arch={','.join(ARCHS)}",
                            f"--multiarch-report={work / 'merged.json'}",
                            f"--junitxml={work / 'merged.xml'}"],
                           check=True, capture_output=True, timeout=300)

        def theirs() -> None:
            subprocess.run([junitparser, "merge", *map(str, junits), str(work / "jp.xml")],
                           check=True, capture_output=True, timeout=300)

        t_ours, t_theirs = _median(ours, args.runs), _median(theirs, args.runs)
        print(f"merge {len(ARCHS)} shards x {args.tests} tests (median of {args.runs}, "
              "process start included):")
        rows = [("pytest-multiarch merge (matrix, digests, gate, JSON + JUnit out)", t_ours),
                ("junitparser merge (JUnit concatenation only)", t_theirs)]
        for label, seconds in rows:
            print(f"  {label:<66} {seconds:7.3f}s")
        print(f"  {'ratio pytest-multiarch / junitparser':<66} {t_ours / t_theirs:7.2f}x")
        loaded = [load_shard(p) for p in shards]
        print("in-process merge_shards, time per test x arch (linear: flat):")
        per_test = []
        for size in (args.tests // 4, args.tests // 2, args.tests, args.tests * 2):
            sized = [_resized(s, size) for s in loaded]
            result = merge_shards(sized)
            assert result.ok, result.problems[:3]
            took = _median(lambda sized=sized: merge_shards(sized), args.runs)
            per_test.append(took / (size * len(ARCHS)))
            print(f"  {size:6d} tests: {took * 1000:8.1f} ms  "
                  f"{per_test[-1] * 1e6:6.2f} us per test x arch")
        growth = per_test[-1] / per_test[0]
        print(f"  per-test cost at {args.tests * 2} vs {args.tests // 4} tests: {growth:.2f}x "
              f"({'linear' if growth < 2.0 else 'NOT linear'})")
        json.loads((work / "merged.json").read_text())  # the merged report is valid JSON
        return 0 if growth < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
