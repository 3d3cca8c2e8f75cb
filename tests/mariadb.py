"""A real MariaDB server for the tests (singer-io tap-mysql reads it), found or installed, started on first use.

Like tests/postgres.py, with tests/servers.py's set-up: the server comes from the machine (``mariadbd`` and
``mariadb-install-db``); on a fresh Debian CI machine running as root it is installed with apt-get (Debian's
``mariadb-server``, which does not start a service where there is no init system). As root it runs as the ``mysql``
system user (the package creates it; created here when missing). It listens on 127.0.0.1 only, in a temporary data
directory removed at the end, and a password user ``tap`` reaches it over TCP, as a tap does. The session fixture
starts it the first time a test asks for it, so workers that run no MariaDB test start none. When it cannot start,
tests needing it are skipped, except on CI (``CI`` set), where they fail loudly.

SQL is sent with the ``mariadb`` command-line client that comes with the server: the project needs no MySQL
driver of its own (tap-mysql has its own, in its own venv).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import typing as t
import uuid
from pathlib import Path

import pytest
from servers import Server, serve, start

USER = "tap"
PASSWORD = "my-" + secrets.token_hex(8)  # a secret the tests can check never shows
PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb")


def quote(value: object) -> str:
    """A SQL literal: NULL, a number, or a quoted string (backslashes and quotes escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class MariaDBServer(Server):
    """One mariadbd process over a temporary data directory."""

    product, package, system_user = "MariaDB", "mariadb-server", "mysql"

    def __init__(self) -> None:
        super().__init__("tap-mariadb-")
        self.socket = self.root / "mariadb.sock"
        self.host = "127.0.0.1"

    def locate(self) -> bool:
        found = {
            name: shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
            for name in PROGRAMS
        }
        if None not in found.values():
            self.programs = t.cast("dict[str, str]", found)
        return None not in found.values()

    def start(self) -> None:
        self.own()
        self.initialise(
            [
                self.programs["mariadb-install-db"],
                "--no-defaults",
                f"--datadir={self.data}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                "--skip-name-resolve",
            ]
        )
        self.launch(
            [
                self.programs["mariadbd"],
                "--no-defaults",
                f"--datadir={self.data}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                f"--bind-address={self.host}",
                f"--pid-file={self.root / 'mariadbd.pid'}",
                f"--tmpdir={self.root}",
                f"--log-error={self.root / 'server.log'}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=0",
                "--skip-log-bin",
                "--max-connections=200",
            ]
        )
        # Root is for this set-up only; the tests and the taps use a password user over TCP.
        self.execute(
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY {quote(PASSWORD)};"
            f" GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'; FLUSH PRIVILEGES;",
            as_root=True,
        )

    def accepts(self) -> bool:
        try:
            self.execute("SELECT 1", as_root=True)
        except RuntimeError:
            return False
        return True

    def _client(self, database: str | None, *, as_root: bool) -> tuple[list[str], dict[str, t.Any]]:
        command = [self.programs["mariadb"], "--no-defaults", "--batch", "--skip-column-names", "--raw"]
        if as_root:  # root has no password and is reached only over the socket, in a directory only we can read
            return [*command, f"--socket={self.socket}", "--user=root", *([database] if database else [])], {}
        return [
            *command,
            "--protocol=tcp",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={USER}",
            *([database] if database else []),
        ], {"env": {**os.environ, "MYSQL_PWD": PASSWORD}}

    def execute(self, sql: str, database: str | None = None, *, as_root: bool = False) -> list[list[str]]:
        """Runs ``sql`` (one or more statements) and returns the rows of the last result, as strings."""
        command, options = self._client(database, as_root=as_root)
        done = subprocess.run(command, input=sql.encode(), capture_output=True, timeout=60, cwd=self.root, **options)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb: {done.stderr.decode(errors='replace').strip()[-500:]}")
        return [line.split("\t") for line in done.stdout.decode().splitlines()]

    def new_database(self) -> str:
        """A fresh, empty database; its name."""
        name = "tap_" + uuid.uuid4().hex[:12]
        self.execute(f"CREATE DATABASE `{name}`")
        return name

    def connection(self, database: str | None = None) -> dict[str, t.Any]:
        """How a tap reaches it: tap-mysql's own config keys (host, port, user, password, database)."""
        settings: dict[str, t.Any] = {"host": self.host, "port": str(self.port), "user": USER, "password": PASSWORD}
        if database is not None:
            settings["database"] = database
        return settings


@pytest.fixture(scope="session")
def mariadb_server() -> t.Iterator[MariaDBServer]:
    """A started MariaDB server for the whole session (from the first test asking); stopped and removed at its end."""
    yield from serve(start(MariaDBServer, "MariaDB"), "MariaDB")


@pytest.fixture
def mariadb_database(mariadb_server: MariaDBServer) -> str:
    """The name of a fresh database on the session's server."""
    return mariadb_server.new_database()
