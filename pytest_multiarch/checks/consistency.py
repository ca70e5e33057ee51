"""Does a replica hold what its primary holds: the workload tables compared across two servers.

``CHECKSUM TABLE ... EXTENDED`` and row counts on both sides; on a mismatch, the rows by primary
key, column by column, floats by bit pattern.  Plain functions of two :class:`MariaDBServer`\\ s:
no replication state, no containers.  No pytest import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_multiarch.checks import workload
from pytest_multiarch.checks.mariadb import MariaDBServer
from pytest_multiarch.checks.verdicts import ReplicationVerdict, RowDifference, TableVerdict

#: Differing rows named per table, at the most.
MAX_ROW_DIFFERENCES = 20


def workload_tables(server: MariaDBServer) -> list[str]:
    """The tables of the workload database on *server*, by name."""
    rows = server.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "ORDER BY table_name",
        (workload.DATABASE,),
    )
    return [str(r[0]) for r in rows]


def compare_tables(
    primary: MariaDBServer, replica: MariaDBServer, tables: Sequence[str] | None = None
) -> ReplicationVerdict:
    """CHECKSUM TABLE and row counts on both sides; for a mismatch, the differing rows by
    primary key.  Without *tables*: every table of either side (so extra ones are named)."""
    position = str(primary.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0] or "")
    replica_tables = set(workload_tables(replica))
    primary_tables = set(workload_tables(primary))
    wanted = list(tables) if tables is not None else sorted(primary_tables | replica_tables)
    verdicts = [_table_verdict(primary, replica, t, t in primary_tables, t in replica_tables)
                for t in wanted]
    return ReplicationVerdict(primary.platform, replica.platform, position, tuple(verdicts))


def _table_verdict(
    primary: MariaDBServer, replica: MariaDBServer, table: str, on_primary: bool, on_replica: bool
) -> TableVerdict:
    qualified = f"`{workload.DATABASE}`.`{table}`"

    def facts(server: MariaDBServer, present: bool) -> tuple[int | None, int]:
        if not present:
            return None, 0
        checksum = server.query(f"CHECKSUM TABLE {qualified} EXTENDED")[0][1]
        return checksum, int(server.query(f"SELECT COUNT(*) FROM {qualified}")[0][0])

    p_sum, p_rows = facts(primary, on_primary)
    r_sum, r_rows = facts(replica, on_replica)
    diffs: tuple[RowDifference, ...] = ()
    if on_primary and on_replica and (p_sum != r_sum or p_rows != r_rows):
        diffs = _row_differences(primary, replica, table)
    return TableVerdict(table, p_sum, r_sum, p_rows, r_rows, diffs)


def _row_differences(
    primary_server: MariaDBServer, replica_server: MariaDBServer, table: str
) -> tuple[RowDifference, ...]:
    sql = f"SELECT * FROM `{workload.DATABASE}`.`{table}` ORDER BY id"
    primary, columns = _rows_by_key(primary_server, sql)
    replica, _ = _rows_by_key(replica_server, sql)
    found: list[RowDifference] = []
    for key in sorted(primary.keys() | replica.keys()):
        p, r = primary.get(key), replica.get(key)
        if p is None or r is None:
            found.append(
                RowDifference(
                    table,
                    key,
                    (("<row>", "present" if p else "absent", "present" if r else "absent"),),
                )
            )
        elif [_normal(v) for v in p] != [_normal(v) for v in r]:
            cols = tuple(
                (c, a, b)
                for c, a, b in zip(columns, p, r, strict=True)
                if _normal(a) != _normal(b)
            )
            found.append(RowDifference(table, key, cols))
        if len(found) >= MAX_ROW_DIFFERENCES:
            break
    return tuple(found)


def _rows_by_key(server: MariaDBServer, sql: str) -> tuple[dict[int, tuple[Any, ...]], list[str]]:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(sql)
            columns = [d[0] for d in cur.description]
            return {int(r[0]): tuple(r) for r in cur.fetchall()}, columns
    finally:
        conn.close()


def _normal(value: Any) -> Any:
    """Exact comparison: floats by bit pattern (so -0.0 != 0.0), everything else as is."""
    return ("float", value.hex()) if isinstance(value, float) else value
