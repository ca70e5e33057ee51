"""The replication verdict is honest, and check values keep their passwords out of reprs.

Pure data: the verdicts are built as ``compare()`` builds them from both servers' answers (the
integration tier builds them from real MariaDB servers, tests/integration/test_checks_mysql.py).
"""

from __future__ import annotations

from pytest_multiarch.checks.mariadb import Account, MariaDBServer
from pytest_multiarch.checks.replication import ReplicationVerdict, TableVerdict
from pytest_multiarch.platforms import Platform

ARM64, AMD64 = Platform.parse("arm64"), Platform.parse("amd64")


def verdict(*tables: TableVerdict) -> ReplicationVerdict:
    return ReplicationVerdict(ARM64, AMD64, "0-1-5", tables)


def test_a_workload_that_wrote_nothing_fails() -> None:
    empty = verdict(TableVerdict("mx_numbers", 0, 0, 0, 0), TableVerdict("mx_text", 0, 0, 0, 0))
    assert not empty.ok
    assert "nothing to compare" in empty.message
    assert "wrote no rows" in empty.message
    assert not verdict().ok


def test_row_counts_are_compared_even_when_checksums_agree() -> None:
    table = TableVerdict("mx_text", 1234, 1234, 10, 9)
    assert not table.ok
    found = verdict(table, TableVerdict("mx_numbers", 7, 7, 5, 5))
    assert not found.ok
    assert found.mismatched_tables == ("mx_text",)
    assert "10 rows on primary, 9 on replica" in found.message


def test_tables_on_one_side_only_are_named() -> None:
    found = verdict(
        TableVerdict("mx_numbers", 7, 7, 5, 5),
        TableVerdict("mx_gone", 3, None, 4, 0),
        TableVerdict("mx_stray", None, 9, 0, 2),
    )
    assert not found.ok
    assert found.missing_tables == ("mx_gone",)
    assert found.extra_tables == ("mx_stray",)
    assert "missing on the replica: mx_gone" in found.message
    assert "only on the replica: mx_stray" in found.message
    assert "mx_stray: only on the replica (2 rows there)" in found.message


def test_identical_tables_with_rows_pass() -> None:
    found = verdict(TableVerdict("mx_numbers", 7, 7, 5, 5))
    assert found.ok, found.message
    assert "1 tables identical: mx_numbers (5 rows)" in found.message


def test_passwords_stay_out_of_reprs() -> None:
    secret = "s3cr3t-Pa55"
    account = Account("service", secret, ("ALL ON x.*",))
    server = MariaDBServer(container=None, image="db@sha256:" + "0" * 64,  # type: ignore[arg-type]
                           platform=ARM64, role="primary", alias="primary", root_password=secret)
    for text in (repr(account), str(account), repr(server), str(server)):
        assert secret not in text
    assert "service" in repr(account)


def test_generated_passwords_mask_their_repr_but_not_their_text() -> None:
    from pytest_multiarch.checks.mariadb import Password

    password = Password.new()
    assert repr(password) == "'***'"
    assert str(password) == password  # what the driver and SQL get
    assert len(password) == 24
    assert password not in repr({"locals": password, "list": [password]})
