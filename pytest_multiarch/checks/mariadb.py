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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from pytest_multiarch.checks._containers import (
    Deadline,
    emulation_options,
    ensure_image,
    exit_problem,
    labels,
    logs_of,
    published_port,
    put_files,
)
from pytest_multiarch.checks.errors import NotReady
from pytest_multiarch.platforms import Platform

#: Native seconds a MariaDB container may take to answer SELECT 1 (times the emulation factor).
READY_TIMEOUT = 30.0
DEFAULT_MEM_LIMIT = "768m"
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


@dataclass(frozen=True, slots=True)
class Account:
    """A user the init file creates: ``privileges`` like ``"ALL ON offerings.*"``."""

    user: str
    password: str
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
    """A MariaDB container: from the host at 127.0.0.1:``port``, from its peers at ``alias``."""

    client: Any
    container: Any
    image: str
    platform: Platform
    role: str
    alias: str
    root_password: str
    time_factor: float
    port: int = 0
    started_at: float = field(default_factory=time.monotonic)
    ready_seconds: float = 0.0

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def arch(self) -> str:
        return self.platform.architecture

    def describe(self) -> str:
        return f"MariaDB {self.role} on {self.platform} ({self.image})"

    def connect(self, database: str | None = None, timeout: float = 10.0) -> Any:
        """A pymysql connection as root (autocommit), from the host."""
        return pymysql.connect(
            host="127.0.0.1",
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
        return logs_of(self.container)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Poll ``SELECT 1`` until it answers; returns the seconds since the container started.

        Raises :class:`NotReady` (or OutOfMemory/ExecFormatError when the container died)."""
        budget = (READY_TIMEOUT if timeout is None else timeout) * self.time_factor
        deadline = Deadline(budget)
        last = "no attempt yet"
        while True:
            problem = exit_problem(self.container, self.image, self.platform, self.logs())
            if problem is not None:
                if isinstance(problem, NotReady):
                    problem.logs[self.name] = self.logs()
                raise problem
            try:
                self.port = published_port(self.container, "3306/tcp")
                conn = self.connect(timeout=min(5.0, max(1.0, deadline.remaining)))
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchall()
                finally:
                    conn.close()
                self.ready_seconds = time.monotonic() - self.started_at
                return self.ready_seconds
            except (pymysql.MySQLError, OSError, NotReady) as exc:
                last = f"{type(exc).__name__}: {exc}"
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
        if kill:
            self.container.kill()
            self.container.wait(timeout=int(30 * self.time_factor))
        else:
            self.container.stop(timeout=int(30 * self.time_factor))

    def start(self) -> float:
        """Start a stopped server and wait until it answers; returns the seconds it took."""
        self.container.start()
        self.started_at = time.monotonic()
        return self.wait_ready()

    def restart(self, kill: bool = False) -> float:
        self.stop(kill=kill)
        return self.start()


def start_mariadb(
    client: Any,
    *,
    image: str,
    platform: Platform,
    network: Any,
    alias: str,
    role: str,
    session_id: str,
    time_factor: float,
    created: list[Any],
    server_id: int = 1,
    accounts: Sequence[Account] = (),
    databases: Sequence[str] = (),
    extra_cnf: str = "",
    mem_limit: str = DEFAULT_MEM_LIMIT,
    root_password: str | None = None,
    wait: bool = True,
    cpu_models: Mapping[str, str] | None = None,
) -> MariaDBServer:
    """Create, configure and start a MariaDB container (``created`` gets it, for clean-up);
    emulated, it runs on its level's qemu CPU model (or *cpu_models*' ``--arch-cpu`` one)."""
    ensure_image(client, image, platform)
    password = root_password or secrets.token_hex(12)
    container = client.containers.create(
        image,
        entrypoint=["/bin/sh", "-c", _START],
        platform=platform.engine_platform,
        **emulation_options(client, platform, cpu_models),
        name=f"pma-{session_id}-{role}-{secrets.token_hex(3)}",
        labels=labels(session_id, role, platform),
        mem_limit=mem_limit,
        memswap_limit=mem_limit,
        ports={"3306/tcp": ("127.0.0.1", None)},
        network=network.name,
        networking_config={network.name: client.api.create_endpoint_config(aliases=[alias])},
    )
    created.append(container)
    put_files(
        container,
        {
            CNF_PATH: server_cnf(server_id, extra_cnf).encode(),
            INIT_PATH: init_sql(password, accounts, databases).encode(),
        },
    )
    container.start()
    server = MariaDBServer(client, container, image, platform, role, alias, password, time_factor)
    if wait:
        server.wait_ready()
    return server
