"""Replication checks against the real test bed: MariaDB from Debian, natively and under qemu-user.

A primary on one arch and a replica on another, GTID replication, the cross-arch workload, the
checksum comparison, the faults (replica and primary restarts) and the verdicts (a mismatch made on
purpose, a refused replication user).  Needs scripts/provision-host; fails without it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from examples import build_example

from pytest_multiarch import ReplicationMismatch, ReplicationRefused
from pytest_multiarch.checks import workload
from pytest_multiarch.checks.replication import ReplicationPair, replication_pair
from pytest_multiarch.oci.resolve import open_source, resolve
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import LABEL_HOST, LABEL_PID, LABEL_SESSION

pytestmark = pytest.mark.integration

REGISTRY = "127.0.0.1:5000"
DB_IMAGE = f"{REGISTRY}/example/base-mariadb:bookworm"
CATCH_UP = 60.0  # native seconds; the library scales them by the replica's emulation factor


@pytest.fixture(scope="module")
def db_images(engine: Any) -> dict[str, str]:
    """Pinned MariaDB variants by arch (the base images are built on first use, then cached)."""
    build_example("images/build-base-images", "--base", "mariadb")
    source, ref = open_source(DB_IMAGE, insecure_registries=[REGISTRY])
    return {a: resolve(source, ref, Platform.parse(a)).pinned for a in ("amd64", "arm64", "s390x")}


def _pair(
    engine: Any, images: dict[str, str], primary: str, replica: str, sid: str, **kw: Any
) -> Any:
    return replication_pair(
        engine,
        primary_platform=f"linux/{primary}",
        replica_platform=f"linux/{replica}",
        primary_image=images[primary],
        replica_image=images[replica],
        session_id=sid,
        **kw,
    )


def _uname(server: Any) -> str:
    return server.container.exec(["uname", "-m"]).stdout.strip()


@pytest.mark.parametrize(
    ("primary", "replica"), [("amd64", "arm64"), ("arm64", "amd64"), ("amd64", "s390x")]
)
def test_replication_across_arches_loses_nothing(
    engine: Any, db_images: dict[str, str], session_id: str, primary: str, replica: str
) -> None:
    with _pair(engine, db_images, primary, replica, session_id) as pair:
        assert (pair.primary_arch, pair.replica_arch) == (primary, replica)
        assert _uname(pair.primary) != _uname(pair.replica), "both servers run the same arch"
        pair.run_workload(3000)
        caught_up = pair.wait_caught_up(timeout=CATCH_UP)
        assert caught_up.position.startswith("0-1-")
        verdict = pair.compare()
        assert verdict.ok, verdict.message
        assert [t.table for t in verdict.tables] == sorted(workload.TABLES)
        assert sum(t.replica_rows for t in verdict.tables) == 3000
        assert f"linux/{primary} (primary) -> linux/{replica} (replica)" in verdict.message


@pytest.mark.parametrize(
    ("primary", "replica", "rows", "kill"),
    [pytest.param("amd64", "arm64", 6000, False, id="restarted"),
     pytest.param("arm64", "amd64", 3000, True, id="killed")],
)
def test_replica_stopped_mid_workload_catches_up(
    engine: Any, db_images: dict[str, str], session_id: str, primary: str, replica: str,
    rows: int, kill: bool,
) -> None:
    with _pair(engine, db_images, primary, replica, session_id) as pair:
        restarts: list[float] = []
        # The restart (SIGTERM, or SIGKILL: a crash) runs in a thread while the workload goes on
        # writing to the primary.
        pair.run_workload(
            rows, batch=100, fault=lambda: restarts.append(pair.restart_replica(kill=kill)))
        assert restarts, "the replica was restarted"
        pair.wait_caught_up(timeout=CATCH_UP)
        verdict = pair.compare()
        assert verdict.ok, verdict.message
        assert sum(t.replica_rows for t in verdict.tables) == rows


def test_primary_restart_replication_resumes(
    engine: Any, db_images: dict[str, str], session_id: str
) -> None:
    with _pair(engine, db_images, "arm64", "amd64", session_id) as pair:
        pair.run_workload(1500)
        pair.wait_caught_up(timeout=CATCH_UP)
        pair.restart_primary()
        pair.run_workload(1500)
        pair.wait_caught_up(timeout=CATCH_UP)
        verdict = pair.compare()
        assert verdict.ok, verdict.message
        assert sum(t.replica_rows for t in verdict.tables) == 3000
        assert pair.replica_status()["Slave_IO_Running"] == "Yes"


def _behind_replication(pair: ReplicationPair, *statements: str) -> None:
    """Write to the replica behind replication's back: sql_log_bin=0, straight to its tables."""
    conn = pair.replica.connect(workload.DATABASE)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def test_checksum_mismatch_names_archs_tables_and_rows(
    engine: Any, db_images: dict[str, str], session_id: str
) -> None:
    with _pair(engine, db_images, "arm64", "amd64", session_id) as pair:
        pair.run_workload(600)
        pair.wait_caught_up(timeout=CATCH_UP)
        _behind_replication(pair, "UPDATE mx_numbers SET d = -d WHERE id = 42",
                            "DELETE FROM mx_text WHERE id = 301")
        verdict = pair.compare()
    assert not verdict.ok
    assert verdict.mismatched_tables == ("mx_numbers", "mx_text")
    message = verdict.message
    assert "linux/arm64 (primary) -> linux/amd64 (replica)" in message
    assert "2 of 3 tables differ: mx_numbers, mx_text" in message
    assert "mx_numbers id=42: d: " in message
    assert "mx_text id=301: <row>: 'present' on primary, 'absent' on replica" in message
    assert "mx_temporal: identical (200 rows)" in message
    with pytest.raises(ReplicationMismatch, match="tables differ"):
        verdict.raise_for_mismatch()


def test_refused_replication_user_is_a_clear_verdict(
    engine: Any, db_images: dict[str, str], session_id: str
) -> None:
    with (
        pytest.raises(ReplicationRefused) as excinfo,
        _pair(engine, db_images, "arm64", "amd64", session_id, refuse_replication_user=True),
    ):
        pass
    message = str(excinfo.value)
    assert "replica on linux/amd64 of primary on linux/arm64" in message
    assert "refuses replication user 'repl'" in message
    assert "access denied" in message
    assert "GRANT REPLICATION SLAVE" in message
    assert len(excinfo.value.logs) == 2


def test_compare_is_honest_about_empty_and_extra_tables(
    engine: Any, db_images: dict[str, str], session_id: str
) -> None:
    with _pair(engine, db_images, "amd64", "amd64", session_id) as pair:
        # The servers are the runners' containers: owner pid and host labels, so the next
        # session's reaper removes them if this process is killed.
        for server in (pair.primary, pair.replica):
            labels = server.container.raw.attrs["Config"]["Labels"]
            assert labels[LABEL_PID] == str(os.getpid())
            assert labels[LABEL_HOST] == socket.gethostname()
            assert labels[LABEL_SESSION] == session_id
            assert server.root_password not in repr(server)
        assert not pair.compare().ok, "no tables at all"
        pair.run_workload(0)  # the schema, replicated, but not one row
        pair.wait_caught_up(timeout=CATCH_UP)
        nothing = pair.compare()
        assert not nothing.ok, "a compare with no rows written must not pass"
        assert "wrote no rows" in nothing.message
        pair.run_workload(300)
        pair.wait_caught_up(timeout=CATCH_UP)
        _behind_replication(pair, "CREATE TABLE mx_stray (id INT PRIMARY KEY)",
                            "INSERT INTO mx_stray VALUES (1)")
        verdict = pair.compare()
    assert not verdict.ok
    assert verdict.extra_tables == ("mx_stray",)
    assert "only on the replica: mx_stray" in verdict.message
    assert [t.table for t in verdict.tables if t.ok] == sorted(workload.TABLES)
