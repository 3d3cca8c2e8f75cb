"""A real PostgreSQL server for the tests, found or installed, started once per session on a loopback port.

conftest.py imports its fixtures, so each pytest-xdist worker starts one server, whichever files it runs. The
server comes from the machine (``/usr/lib/postgresql/*/bin``, or ``initdb`` on PATH); on a fresh Debian CI machine
running as root it is installed with apt-get. PostgreSQL refuses to run as root, so as root it runs as the
``postgres`` system user (created when missing). It listens on 127.0.0.1 only, with a password, in a temporary
data directory removed at the end. When it cannot start, tests needing it are skipped, except on CI (``CI`` set),
where they fail loudly.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import typing as t
import uuid
from pathlib import Path

import pytest
from helpers import file_lock

USER = "ledger"
PASSWORD = "pg-" + secrets.token_hex(8)  # a secret the tests check never shows
START_TIMEOUT = 60.0
SETUP_LOCK = Path(tempfile.gettempdir()) / "target-encharge-tests-postgres-setup.lock"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _install() -> None:
    """apt-get install postgresql (root on Debian/Ubuntu only)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("PostgreSQL is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for the current user, or the ``postgres`` system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        return pwd.getpwnam("postgres")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One postgres process over a temporary data directory."""

    def __init__(self) -> None:
        with file_lock(SETUP_LOCK):  # one apt-get (or useradd) at a time: every pytest-xdist worker may get here
            bindir = _bindir()
            if bindir is None:
                _install()
                bindir = _bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL was installed but initdb is not found")
            self.user = _server_user()
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def _as_server_user(self) -> dict[str, t.Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        if self.user is not None:
            for path in (self.root, password_file):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.root.chmod(0o700)
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
            **self._as_server_user(),
        )
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "server.log").open("wb"),
            cwd=self.root,
            **self._as_server_user(),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections: {self.log_tail()}") from None
                time.sleep(0.2)

    def log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def dsn(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "ledger_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> t.Iterator[PostgresServer]:
    """A started PostgreSQL server for the whole session; stopped and removed at its end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed: pip install -e '.[postgres]'")
    server = None
    try:
        server = PostgresServer()
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace")[-300:] if getattr(exc, "stderr", None) else str(exc)
        if server is not None:
            server.stop()
        _unavailable(f"cannot start PostgreSQL: {detail}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database on the session's server, password included."""
    return postgres_server.new_database()


def _unavailable(reason: str) -> t.NoReturn:
    if os.environ.get("CI", "").lower() not in {"", "0", "false"}:
        pytest.fail(f"PostgreSQL is required on CI: {reason}", pytrace=False)
    pytest.skip(reason)
