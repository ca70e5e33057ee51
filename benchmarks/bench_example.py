"""Time to a ready MariaDB per arch (native vs emulated) and time for a replica on another arch to
catch up 10,000 rows: the numbers behind the example's timeouts and its 10-minute budget.

    .venv/bin/python benchmarks/bench_example.py [--runs 3] [--rows 10000] [--arch LIST]

* ready      — container start until ``SELECT 1`` answers from the host (datadir already in the
               image), through :func:`pytest_multiarch.checks.mariadb.start_mariadb`;
* catch-up   — replication paused (``STOP SLAVE``), ROWS workload rows written to the primary,
               ``START SLAVE``, then until ``MASTER_GTID_WAIT`` on the primary's ``gtid_binlog_pos``
               returns: the replica fetches and applies all of them.  Also the primary's write time.

Uses the example's MariaDB base (``example_project/images/build-base-images`` first).
Medians of --runs; every container is labelled and removed.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from itertools import permutations

from pytest_multiarch.checks.engine import Started, time_factor
from pytest_multiarch.checks.mariadb import start_mariadb
from pytest_multiarch.checks.replication import replication_pair
from pytest_multiarch.oci.resolve import open_source, resolve
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.docker.engine import EngineRunner

DB_IMAGE = "127.0.0.1:5000/example/base-mariadb:bookworm"


def ready_time(runner: EngineRunner, image: str, plat: Platform) -> float:
    with Started(runner) as started:
        server = start_mariadb(
            started, image=image, platform=plat, network=started.network("bench", plat),
            alias="db", role="bench", time_factor=time_factor(runner, plat, None),
        )
        return server.ready_seconds


def catch_up_time(
    runner: EngineRunner, images: dict[str, str], primary: str, replica: str, rows: int
) -> tuple[float, float]:
    with replication_pair(
        runner,
        primary_platform=primary,
        replica_platform=replica,
        primary_image=images[primary],
        replica_image=images[replica],
    ) as pair:
        pair.pause_replication()
        written = pair.run_workload(rows)
        start = time.monotonic()
        pair.resume_replication()
        pair.wait_caught_up(timeout=600)
        elapsed = time.monotonic() - start
        verdict = pair.compare()
        if not verdict.ok:
            raise SystemExit(verdict.message)
        return written.seconds, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--arch", default="amd64,arm64,s390x")
    args = parser.parse_args()
    arches = args.arch.split(",")
    # One labelled session: its close() removes whatever a failed measurement left.
    runner = EngineRunner(session=Session.new(f"bench-{secrets.token_hex(4)}"))
    native = runner.engine_arch.architecture
    source, ref = open_source(DB_IMAGE, insecure_registries=["127.0.0.1:5000"])
    images = {a: resolve(source, ref, Platform.parse(a)).pinned for a in arches}
    try:
        print(f"MariaDB ready (container start -> SELECT 1), median of {args.runs}:")
        for arch in arches:
            times = [
                ready_time(runner, images[arch], Platform.parse(arch))
                for _ in range(args.runs)
            ]
            kind = "native" if arch == native else "emulated"
            print(
                f"  {arch:6} {kind:8} {statistics.median(times):6.2f}s  "
                f"(min {min(times):.2f}s, max {max(times):.2f}s)"
            )
        print(
            f"\nReplica catch-up of {args.rows} rows (paused, written, resumed), "
            f"median of {args.runs}:"
        )
        for primary, replica in permutations(arches, 2):
            runs = [
                catch_up_time(runner, images, primary, replica, args.rows)
                for _ in range(args.runs)
            ]
            write = statistics.median(r[0] for r in runs)
            catch = statistics.median(r[1] for r in runs)
            print(
                f"  {primary:6} -> {replica:6} catch-up {catch:6.2f}s  "
                f"({args.rows / catch:,.0f} rows/s; primary wrote them in {write:.2f}s)"
            )
    finally:
        runner.close()


if __name__ == "__main__":
    main()
