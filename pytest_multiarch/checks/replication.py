"""Replication checks: a MariaDB primary on one architecture, a replica on another.

    with replication_pair(client, primary_platform="linux/arm64", replica_platform="linux/amd64",
                          primary_image=DB_ARM64_PINNED, replica_image=DB_AMD64_PINNED,
                          session_id="s1") as pair:
        pair.run_workload(10_000)
        pair.wait_caught_up()
        pair.compare().raise_for_mismatch()

GTID replication (``MASTER_USE_GTID=slave_pos``) is configured through pymysql.  Readiness is
``SELECT 1`` and ``SHOW SLAVE STATUS``; catching up is ``MASTER_GTID_WAIT`` on the primary's
``gtid_binlog_pos``; comparing (:mod:`.consistency`) is ``CHECKSUM TABLE`` and, on a mismatch,
the rows by primary key.
No pytest import here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pymysql
import pymysql.cursors

from pytest_multiarch.checks import consistency, workload
from pytest_multiarch.checks.engine import Engine, as_platform, started_on, time_factor
from pytest_multiarch.checks.mariadb import (
    DEFAULT_MEM_LIMIT,
    Account,
    MariaDBServer,
    Password,
    start_mariadb,
)
from pytest_multiarch.checks.verdicts import (
    CatchUp,
    ReplicationVerdict,
    RowDifference,
    TableVerdict,
    WorkloadResult,
)
from pytest_multiarch.errors import (
    ReplicationBroken,
    ReplicationLag,
    ReplicationRefused,
)
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Deadline

# The verdict types live in .verdicts; importable from here too.
__all__ = ["CatchUp", "ReplicationPair", "ReplicationVerdict", "RowDifference", "TableVerdict",
           "WorkloadResult", "replication_pair"]

#: Native seconds (times the replica's emulation factor) for the replica threads to run, and to
#: reach the primary's GTID position.
REPLICATING_TIMEOUT = 30.0
CATCH_UP_TIMEOUT = 60.0
REPL_USER = "repl"
PRIMARY_ALIAS = "primary"
#: IO-thread errors that mean "the primary refuses this user", not "try again".
_REFUSALS = {
    1044: "access denied to the database",
    1045: "access denied (no such user, or a wrong password)",
    1227: "the user lacks the REPLICATION SLAVE privilege",
    1698: "access denied (no such user, or a wrong password)",
}


class ReplicationPair:
    """A primary and its replica; both :class:`MariaDBServer`, on one private network."""

    def __init__(
        self, primary: MariaDBServer, replica: MariaDBServer, repl_password: str, seed: int = 0
    ) -> None:
        self.primary = primary
        self.replica = replica
        self._repl_password = repl_password
        self._seed = seed
        self._next_id = 1
        self._schema_ready = False
        #: Logs of both servers, filled when the context exits (for failure reports).
        self.collected_logs: dict[str, str] = {}

    @property
    def primary_arch(self) -> str:
        return self.primary.arch

    @property
    def replica_arch(self) -> str:
        return self.replica.arch

    def describe(self) -> str:
        return f"replica on {self.replica.platform} of primary on {self.primary.platform}"

    def logs(self) -> dict[str, str]:
        return {self.primary.name: self.primary.logs(), self.replica.name: self.replica.logs()}

    # ---- setup ----
    def start_replication(self) -> None:
        """Point the replica at the primary (GTID, slave_pos) and wait until both threads run."""
        conn = self.replica.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("STOP SLAVE")
                cur.execute(
                    "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=3306, MASTER_USER=%s, "
                    "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                    (PRIMARY_ALIAS, REPL_USER, self._repl_password),
                )
                cur.execute("START SLAVE")
        finally:
            conn.close()
        self.wait_replicating()

    def replica_status(self) -> dict[str, Any]:
        conn = self.replica.connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SHOW SLAVE STATUS")
                status = cur.fetchone()
                cur.execute("SELECT @@GLOBAL.gtid_slave_pos AS pos")
                pos = cur.fetchone()
        finally:
            conn.close()
        if status is None:
            raise ReplicationBroken(f"{self.describe()}: the replica has no replication configured")
        return {**status, "gtid_slave_pos": pos["pos"] if pos else ""}

    def wait_replicating(self, timeout: float | None = None) -> float:
        """Wait until Slave_IO_Running and Slave_SQL_Running are Yes; raise on refusal or error."""
        budget = (REPLICATING_TIMEOUT if timeout is None else timeout) * self.replica.time_factor
        deadline = Deadline(budget)
        while True:
            status = self.replica_status()
            self._raise_for_status(status)
            if status["Slave_IO_Running"] == "Yes" and status["Slave_SQL_Running"] == "Yes":
                return deadline.elapsed
            if deadline.expired:
                raise ReplicationBroken(
                    f"{self.describe()}: replication threads not running after "
                    f"{deadline.elapsed:.1f}s ({self._status_text(status)}). "
                    "Hint: read both server logs",
                    self.logs(),
                )
            time.sleep(0.5)

    def _raise_for_status(self, status: dict[str, Any], io_errors_fatal: bool = False) -> None:
        io_errno, sql_errno = (
            int(status.get("Last_IO_Errno") or 0),
            int(status.get("Last_SQL_Errno") or 0),
        )
        if io_errno in _REFUSALS:
            raise ReplicationRefused(
                f"{self.describe()}: the primary refuses replication user {REPL_USER!r} - "
                f"{_REFUSALS[io_errno]} (IO error {io_errno}: {status.get('Last_IO_Error')}). "
                f"Hint: on the primary, CREATE USER {REPL_USER!r} and "
                "GRANT REPLICATION SLAVE ON *.* to it",
                self.logs(),
            )
        if sql_errno:
            raise ReplicationBroken(
                f"{self.describe()}: the replica's SQL thread stopped with error {sql_errno}: "
                f"{status.get('Last_SQL_Error')}. Hint: the replica diverged from the primary "
                "(a write made on the replica directly?)",
                self.logs(),
            )
        if io_errno and io_errors_fatal:
            raise ReplicationBroken(
                f"{self.describe()}: IO error {io_errno}: {status.get('Last_IO_Error')}",
                self.logs(),
            )

    @staticmethod
    def _status_text(status: dict[str, Any]) -> str:
        keys = (
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Seconds_Behind_Master",
            "gtid_slave_pos",
            "Last_IO_Error",
            "Last_SQL_Error",
        )
        return ", ".join(f"{k}={status.get(k)!r}" for k in keys if status.get(k) not in (None, ""))

    # ---- workload ----
    def _ensure_schema(self, conn: Any) -> None:
        if self._schema_ready:
            return
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{workload.DATABASE}`")
            for table, columns in workload.SCHEMA.items():
                cur.execute(f"CREATE TABLE IF NOT EXISTS `{workload.DATABASE}`.`{table}` {columns}")
        self._schema_ready = True

    def run_workload(
        self,
        rows: int = 1000,
        *,
        batch: int = 300,
        fault: Callable[[], object] | None = None,
        fault_at: float = 0.5,
    ) -> WorkloadResult:
        """Write ``rows`` rows (spread over the workload tables) to the primary, ``batch`` rows per
        transaction.  ``fault``, if given, starts in a thread once ``fault_at`` of the rows are
        written, while the writes go on; its exception, if any, is raised at the end."""
        deadline = Deadline(0)
        first = self._next_id
        fault_thread: threading.Thread | None = None
        fault_error: list[BaseException] = []

        def run_fault() -> None:
            assert fault is not None
            try:
                fault()
            except BaseException as exc:  # handed to the caller below
                fault_error.append(exc)

        conn = self.primary.connect()
        try:
            self._ensure_schema(conn)
            conn.autocommit(False)
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                written = 0
                while written < rows:
                    if fault is not None and fault_thread is None and written >= rows * fault_at:
                        fault_thread = threading.Thread(target=run_fault, name="replication-fault")
                        fault_thread.start()
                    size = min(batch, rows - written)
                    by_table: dict[str, list[tuple[Any, ...]]] = {}
                    for n in range(self._next_id, self._next_id + size):
                        by_table.setdefault(workload.table_of(n), []).append(
                            workload.row(n, self._seed)
                        )
                    for table, values in by_table.items():
                        cur.executemany(workload.insert_sql(table), values)
                    conn.commit()
                    self._next_id += size
                    written += size
        finally:
            conn.close()
            if fault_thread is not None:
                fault_thread.join()
        if fault is not None and fault_thread is None:  # zero rows: still run the fault
            run_fault()
        if fault_error:
            raise fault_error[0]
        return WorkloadResult(rows, first, self._next_id - 1, deadline.elapsed)

    def wait_caught_up(self, timeout: float | None = None) -> CatchUp:
        """Wait (MASTER_GTID_WAIT, in slices) until the replica has applied the primary's
        ``gtid_binlog_pos``; raise :class:`ReplicationLag` after ``timeout`` native seconds times
        the replica's emulation factor, or at once when a replication thread fails."""
        position = str(self.primary.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0] or "")
        budget = (CATCH_UP_TIMEOUT if timeout is None else timeout) * self.replica.time_factor
        deadline = Deadline(budget)
        if not position:
            return CatchUp("", 0.0)
        while True:
            wait = max(1, min(5, int(deadline.remaining)))
            result = self.replica.query("SELECT MASTER_GTID_WAIT(%s, %s)", (position, wait))[0][0]
            if result == 0:
                return CatchUp(position, deadline.elapsed)
            status = self.replica_status()
            self._raise_for_status(status)
            if deadline.expired:
                raise ReplicationLag(
                    f"{self.describe()} did not reach the primary's GTID position {position} "
                    f"within {deadline.elapsed:.1f}s (timeout {budget:.0f}s = "
                    f"{budget / self.replica.time_factor:.0f}s x emulation factor "
                    f"{self.replica.time_factor:g}); {self._status_text(status)}. "
                    "Hint: the replica may just be slow under emulation; read both logs",
                    self.logs(),
                )

    # ---- comparison ----
    def tables(self) -> list[str]:
        """The workload tables on the primary, by name."""
        return consistency.workload_tables(self.primary)

    def compare_tables(self, tables: Sequence[str] | None = None) -> ReplicationVerdict:
        """CHECKSUM TABLE and row counts on both sides; for a mismatch, the differing rows by
        primary key.  Without *tables*: every table of either side (so extra ones are named)."""
        return consistency.compare_tables(self.primary, self.replica, tables)

    compare = compare_tables

    def pause_replication(self) -> None:
        """``STOP SLAVE``: the primary keeps writing, the replica falls behind."""
        self.replica.query("STOP SLAVE")

    def resume_replication(self) -> None:
        """``START SLAVE`` and wait until both replica threads run again."""
        self.replica.query("START SLAVE")
        self.wait_replicating()

    # ---- faults ----
    def restart_replica(self, kill: bool = False) -> float:
        """Stop (SIGTERM, or SIGKILL with ``kill``) and start the replica; wait until it answers and
        replicates again.  Returns the seconds it was away."""
        deadline = Deadline(0)
        self.replica.restart(kill=kill)
        self.wait_replicating()
        return deadline.elapsed

    def restart_primary(self, kill: bool = False) -> float:
        """Stop and start the primary; wait until it answers and the replica reconnects."""
        deadline = Deadline(0)
        self.primary.restart(kill=kill)
        self.wait_replicating()
        return deadline.elapsed


@contextmanager
def replication_pair(
    engine: Engine,
    *,
    primary_platform: Platform | str,
    replica_platform: Platform | str,
    primary_image: str,
    replica_image: str,
    session_id: str | None = None,
    emulation_factor: float | None = None,
    refuse_replication_user: bool = False,
    mem_limit: str = DEFAULT_MEM_LIMIT,
    seed: int = 0,
) -> Iterator[ReplicationPair]:
    """Start a primary (``primary_image`` on ``primary_platform``) and a replica, configure GTID
    replication and wait until it runs; yield a :class:`ReplicationPair`.

    *engine* is an :class:`~pytest_multiarch.runners.docker.engine.EngineRunner` (or a Docker SDK
    client, wrapped in one for *session_id*).  Images are pinned refs of the right variant.  With
    ``refuse_replication_user`` the primary has no replication user, which must give
    :class:`ReplicationRefused`.  Both containers (memory limited) and the network carry the
    session labels and are removed on exit, interrupts included.
    """
    p_plat, r_plat = as_platform(primary_platform), as_platform(replica_platform)
    repl_password = Password.new()
    with started_on(engine, session_id) as started:
        runner = started.runner
        network = started.network("repl", p_plat)
        repl = [] if refuse_replication_user else [
            Account(REPL_USER, repl_password, ("REPLICATION SLAVE, REPLICATION CLIENT ON *.*",))
        ]
        # Both start at once and are then probed: two emulated start-ups overlap.
        servers = [
            start_mariadb(
                started, image=image, platform=plat, network=network, alias=alias, role=alias,
                mem_limit=mem_limit, time_factor=time_factor(runner, plat, emulation_factor),
                server_id=server_id, accounts=accounts, wait=False,
            )
            for image, plat, alias, server_id, accounts in (
                (primary_image, p_plat, PRIMARY_ALIAS, 1, repl),
                (replica_image, r_plat, "replica", 2, []),
            )
        ]
        for server in servers:
            server.wait_ready()
        pair = ReplicationPair(servers[0], servers[1], repl_password, seed)
        started.keep_logs_in(pair.collected_logs)
        pair.start_replication()
        yield pair
