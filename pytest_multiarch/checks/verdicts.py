"""What a replication check found: per-table checksums and row counts, rows that differ, and
an honest verdict (no rows written is a failure, tables on one side only are named).

Pure data: :class:`~pytest_multiarch.checks.replication.ReplicationPair` fills it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_multiarch.errors import ReplicationMismatch
from pytest_multiarch.platforms import Platform

__all__ = ["CatchUp", "ReplicationVerdict", "RowDifference", "TableVerdict", "WorkloadResult"]


@dataclass(frozen=True, slots=True)
class RowDifference:
    """One primary key whose row differs; ``columns`` maps column -> (primary, replica) value."""

    table: str
    key: int
    columns: tuple[tuple[str, Any, Any], ...]

    def describe(self) -> str:
        if not self.columns:
            return f"{self.table} id={self.key}"
        parts = [
            f"{name}: {_short(p)} on primary, {_short(r)} on replica" for name, p, r in self.columns
        ]
        return f"{self.table} id={self.key}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class TableVerdict:
    """One table on both sides; a ``None`` checksum means the table is missing on that side."""

    table: str
    primary_checksum: int | None
    replica_checksum: int | None
    primary_rows: int
    replica_rows: int
    differing_rows: tuple[RowDifference, ...] = ()

    @property
    def ok(self) -> bool:
        """Present on both sides with the same checksum and the same row count."""
        return (
            self.primary_checksum is not None and self.primary_checksum == self.replica_checksum
            and self.primary_rows == self.replica_rows
        )

    def describe(self) -> str:
        if self.primary_checksum is None:
            return f"{self.table}: only on the replica ({self.replica_rows} rows there)"
        if self.replica_checksum is None:
            return f"{self.table}: missing on the replica ({self.primary_rows} rows on the primary)"
        if self.ok:
            return f"{self.table}: identical ({self.primary_rows} rows)"
        if self.primary_checksum == self.replica_checksum:
            return (f"{self.table}: same checksum but {self.primary_rows} rows on primary, "
                    f"{self.replica_rows} on replica")
        return (
            f"{self.table}: checksum {self.primary_checksum} on primary, "
            f"{self.replica_checksum} on replica; {self.primary_rows} vs {self.replica_rows} rows"
        )


@dataclass(frozen=True, slots=True)
class ReplicationVerdict:
    """What the comparison found, naming both platforms and every table.

    Honest by construction: no tables, or tables that are all empty (the workload wrote
    nothing), is a failure, not a vacuous pass.
    """

    primary: Platform
    replica: Platform
    gtid_position: str
    tables: tuple[TableVerdict, ...]

    @property
    def rows(self) -> int:
        """Rows on the primary, over every compared table."""
        return sum(t.primary_rows for t in self.tables)

    @property
    def ok(self) -> bool:
        return bool(self.tables) and self.rows > 0 and all(t.ok for t in self.tables)

    @property
    def mismatched_tables(self) -> tuple[str, ...]:
        return tuple(t.table for t in self.tables if not t.ok)

    @property
    def missing_tables(self) -> tuple[str, ...]:
        """Tables of the primary the replica lacks."""
        return tuple(t.table for t in self.tables if t.replica_checksum is None)

    @property
    def extra_tables(self) -> tuple[str, ...]:
        """Tables only the replica has."""
        return tuple(t.table for t in self.tables if t.primary_checksum is None)

    @property
    def message(self) -> str:
        head = (
            f"replication {self.primary} (primary) -> {self.replica} (replica) "
            f"at GTID {self.gtid_position or '-'}"
        )
        if not self.tables:
            return f"{head}: no tables to compare (run a workload first)"
        if self.rows == 0 and not self.mismatched_tables:
            return (f"{head}: nothing to compare: the primary's {len(self.tables)} tables are "
                    "empty, so replication was not exercised (the workload wrote no rows)")
        if self.ok:
            return f"{head}: {len(self.tables)} tables identical: " + ", ".join(
                f"{t.table} ({t.primary_rows} rows)" for t in self.tables
            )
        lines = [
            f"{head}: {len(self.mismatched_tables)} of {len(self.tables)} tables differ: "
            f"{', '.join(self.mismatched_tables)}"
        ]
        if self.missing_tables:
            lines[0] += f"; missing on the replica: {', '.join(self.missing_tables)}"
        if self.extra_tables:
            lines[0] += f"; only on the replica: {', '.join(self.extra_tables)}"
        for t in self.tables:
            lines.append(f"  {t.describe()}")
            lines += [f"    {d.describe()}" for d in t.differing_rows]
        return "\n".join(lines)

    def raise_for_mismatch(self) -> None:
        if not self.ok:
            raise ReplicationMismatch(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    rows: int
    first_id: int
    last_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class CatchUp:
    position: str
    seconds: float


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
