"""One MariaDB server in a container, for any platform, ready when it answers ``SELECT 1``.

The image only needs ``mariadbd`` and ``mariadb-install-db`` (the example's Debian base, or the
official image).  Configuration goes in through a ``.cnf`` copied in before start, so that
``innodb_buffer_pool_size_max`` is capped for the data-directory initialization too: uncapped,
MariaDB under qemu-user commits an 8 TiB reservation and grows until killed.  Users are created
by an ``--init-file`` that runs with ``sql_log_bin=0``, so a primary's binary log holds only what
the test writes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from pytest_multiarch.checks.engine import Started, ensure_running, labels
from pytest_multiarch.errors import NotReady
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Deadline
from pytest_multiarch.runners.docker.container import EngineContainer

#: Native seconds a MariaDB container may take to answer SELECT 1 (times the emulation factor).
READY_TIMEOUT = 30.0
DEFAULT_MEM_LIMIT = "768m"  # MariaDB under qemu needs more than a runner's 512m default
CNF_PATH = "/etc/mysql/mariadb.conf.d/90-pytest-multiarch.cnf"
INIT_PATH = "/etc/mysql/pytest-multiarch-init.sql"

_START = f"""set -e
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld /var/lib/mysql
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
fi
exec mariadbd --user=mysql --init-file={INIT_PATH}
"""


class Password(str):
    """A password: the text itself for drivers and SQL, ``'***'`` in every repr (so tracebacks
    with locals, ``pytest -l``, and dataclass reprs never show it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    @classmethod
    def new(cls) -> Password:
        """A random one, 24 hex digits."""
        return cls(secrets.token_hex(12))


@dataclass(frozen=True, slots=True)
class Account:
    """A user the init file creates: ``privileges`` like ``"ALL ON offerings.*"``."""

    user: str
    password: str = field(repr=False)  # never in a report or a traceback's locals
    privileges: tuple[str, ...] = ()


def server_cnf(server_id: int, extra: str = "") -> str:
    """The ``.cnf`` every check's server runs with; ``extra`` lines go into ``[mysqld]``."""
    return (
        "[mysqld]\n"
        "bind-address = 0.0.0.0\n"
        "port = 3306\n"
        "skip-name-resolve\n"
        # loose-: servers older than 10.11.12 lack the option (and the reservation it caps).
        "loose-innodb_buffer_pool_size_max = 128M\n"
        "innodb_buffer_pool_size = 64M\n"
        "innodb_use_native_aio = 0\n"  # refused under qemu-user anyway; spares the warnings
        "innodb_flush_log_at_trx_commit = 2\n"
        "performance_schema = OFF\n"
        "character_set_server = utf8mb4\n"
        "collation_server = utf8mb4_bin\n"
        f"server_id = {server_id}\n"
        "log_bin = mariadb-bin\n"
        "binlog_format = ROW\n"
        "log_slave_updates = ON\n"
        "gtid_strict_mode = ON\n"
        "relay_log_recovery = ON\n" + extra
    )


def init_sql(root_password: str, accounts: Sequence[Account], databases: Sequence[str]) -> str:
    def lit(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    lines = [
        "SET SESSION sql_log_bin = 0;",
        f"CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY {lit(root_password)};",
        "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;",
    ]
    lines += [f"CREATE DATABASE IF NOT EXISTS `{name}`;" for name in databases]
    for account in accounts:
        user = f"{lit(account.user)}@'%'"
        lines.append(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {lit(account.password)};")
        lines += [f"GRANT {p} TO {user};" for p in account.privileges]
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class MariaDBServer:
    """A MariaDB container: from the host at ``host``:``port``, from its peers at ``alias``."""

    container: EngineContainer
    image: str
    platform: Platform
    role: str
    alias: str
    root_password: str = field(repr=False)  # never in a report or a traceback's locals
    time_factor: float = 1.0
    port: int = 0
    started_at: float = field(default_factory=time.monotonic)
    ready_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def host(self) -> str:
        """Where the published port is reachable from here."""
        return self.container.host

    @property
    def arch(self) -> str:
        return self.platform.architecture

    def describe(self) -> str:
        return f"MariaDB {self.role} on {self.platform} ({self.image})"

    def connect(self, database: str | None = None, timeout: float = 10.0) -> Any:
        """A pymysql connection as root (autocommit), from the host."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user="root",
            password=self.root_password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=max(2, int(timeout)),
            read_timeout=int(60 * self.time_factor),
            write_timeout=int(60 * self.time_factor),
        )

    def query(
        self, sql: str, args: Any = None, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; the rows it returned."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def logs(self) -> str:
        return self.container.logs()

    def wait_ready(self, timeout: float | None = None) -> float:
        """Poll ``SELECT 1`` until it answers; returns the seconds since the container started.

        Raises :class:`NotReady` (or the runner's OutOfMemory/ExecFormatError when it died)."""
        budget = (READY_TIMEOUT if timeout is None else timeout) * self.time_factor
        deadline = Deadline(budget)
        last = "no attempt yet"
        while True:
            ensure_running(self.container)
            try:
                self.port = self.container.host_port(3306)
                conn = self.connect(timeout=min(5.0, max(1.0, deadline.remaining)))
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchall()
                finally:
                    conn.close()
                self.ready_seconds = time.monotonic() - self.started_at
                return self.ready_seconds
            except (pymysql.MySQLError, OSError) as exc:
                last = _without(f"{type(exc).__name__}: {exc}", self.root_password)
            if deadline.expired:
                raise NotReady(
                    f"{self.describe()} did not answer SELECT 1 within {deadline.elapsed:.1f}s "
                    f"(timeout {budget:.0f}s = {budget / self.time_factor:.0f}s x emulation factor "
                    f"{self.time_factor:g}); last error: {last}. Hint: read the server log below; "
                    "under qemu-user a slow start may need a larger emulation factor",
                    {self.name: self.logs()},
                )
            time.sleep(0.5)

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM with a scaled grace period, or SIGKILL (a crash)."""
        self.container.halt(30 * self.time_factor, kill=kill)

    def start(self) -> float:
        """Start a stopped server and wait until it answers; returns the seconds it took."""
        self.container.resume()
        self.started_at = time.monotonic()
        return self.wait_ready()

    def restart(self, kill: bool = False) -> float:
        self.stop(kill=kill)
        return self.start()


def _without(text: str, secret: str) -> str:
    """*text* with *secret* masked (a driver may echo what it was given)."""
    return text.replace(secret, "***") if secret else text


def start_mariadb(
    started: Started,
    *,
    image: str,
    platform: Platform,
    network: str,
    alias: str,
    role: str,
    time_factor: float,
    server_id: int = 1,
    accounts: Sequence[Account] = (),
    databases: Sequence[str] = (),
    extra_cnf: str = "",
    mem_limit: str = DEFAULT_MEM_LIMIT,
    root_password: str | None = None,
    wait: bool = True,
) -> MariaDBServer:
    """Configure and start a MariaDB container through *started*'s runner (which tracks it,
    for logs and clean-up); wait until it answers unless *wait* is false."""
    password = Password(root_password) if root_password else Password.new()
    container = started.add(started.runner.start(
        image, platform, entrypoint=["/bin/sh", "-c", _START],
        name=started.container_name(role), labels=labels(role, platform), mem_limit=mem_limit,
        ports=[3306], network=network, network_aliases=[alias],
        files={
            CNF_PATH: server_cnf(server_id, extra_cnf).encode(),
            INIT_PATH: init_sql(password, accounts, databases).encode(),
        },
    ))
    server = MariaDBServer(container, image, platform, role, alias, password, time_factor)
    if wait:
        server.wait_ready()
    return server
