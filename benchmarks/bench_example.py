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
from typing import Any

import docker

from pytest_multiarch.checks._containers import engine_platform, remove_session, time_factor
from pytest_multiarch.checks.mariadb import start_mariadb
from pytest_multiarch.checks.replication import replication_pair
from pytest_multiarch.oci.resolve import open_source, resolve
from pytest_multiarch.platforms import Platform

DB_IMAGE = "127.0.0.1:5000/example/base-mariadb:bookworm"


def ready_time(client: Any, image: str, plat: Platform, session: str) -> float:
    created: list[Any] = []
    network = client.networks.create(
        f"pma-{session}-bench-{secrets.token_hex(3)}",
        labels={"io.pytest-multiarch": "1", "io.pytest-multiarch.session": session},
    )
    try:
        server = start_mariadb(
            client,
            image=image,
            platform=plat,
            network=network,
            alias="db",
            role="bench",
            session_id=session,
            created=created,
            time_factor=time_factor(client, plat, None),
        )
        return server.ready_seconds
    finally:
        for c in created:
            c.remove(force=True, v=True)
        network.remove()


def catch_up_time(
    client: Any, images: dict[str, str], primary: str, replica: str, rows: int, session: str
) -> tuple[float, float]:
    with replication_pair(
        client,
        primary_platform=primary,
        replica_platform=replica,
        primary_image=images[primary],
        replica_image=images[replica],
        session_id=session,
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
    client = docker.from_env(timeout=600)
    native = engine_platform(client).architecture
    source, ref = open_source(DB_IMAGE, insecure_registries=["127.0.0.1:5000"])
    images = {a: resolve(source, ref, Platform.parse(a)).pinned for a in arches}
    session = f"bench-{secrets.token_hex(4)}"
    try:
        print(f"MariaDB ready (container start -> SELECT 1), median of {args.runs}:")
        for arch in arches:
            times = [
                ready_time(client, images[arch], Platform.parse(arch), session)
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
                catch_up_time(client, images, primary, replica, args.rows, session)
                for _ in range(args.runs)
            ]
            write = statistics.median(r[0] for r in runs)
            catch = statistics.median(r[1] for r in runs)
            print(
                f"  {primary:6} -> {replica:6} catch-up {catch:6.2f}s  "
                f"({args.rows / catch:,.0f} rows/s; primary wrote them in {write:.2f}s)"
            )
    finally:
        remove_session(client, session)


if __name__ == "__main__":
    main()
