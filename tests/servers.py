"""Real database servers for the tests and the benchmarks, without pytest: one home for what they share.

A server comes from the machine; on a fresh Debian/Ubuntu machine running as root, :func:`install` gets it with
apt-get. Every finding, installing and user-creating step runs under :func:`setup_lock`, so one process at a time
does it (the pytest-xdist workers, the benchmarks, another session). As root a server runs as its own system user
(:func:`server_user`, created when missing), since PostgreSQL and MariaDB refuse or dislike running as root. A
server listens on 127.0.0.1 only (:func:`free_port`), in a temporary data directory removed when it stops.

tests/postgres.py and tests/mariadb.py hold the pytest fixtures (skipped off CI, failing on CI when a server
cannot start); benchmarks/run.py starts :class:`PostgresServer` through :func:`start_postgres`.
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

from helpers import file_lock

START_TIMEOUT = 60.0
#: One apt-get (or useradd) at a time, whoever runs it: dpkg allows one at a time anyway.
SETUP_LOCK = Path(tempfile.gettempdir()) / "target-encharge-tests-server-setup.lock"


def setup_lock() -> t.ContextManager[None]:
    """Held by one process at a time around finding, installing and user-creating steps."""
    return file_lock(SETUP_LOCK)


def install(package: str, product: str) -> None:
    """``apt-get install package`` (root on Debian/Ubuntu only); call it under :func:`setup_lock`."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{product} is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def server_user(name: str) -> pwd.struct_passwd | None:
    """Who runs a server: None for the current user, or the system user ``name`` when we are root (created when
    missing); call it under :func:`setup_lock`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise RuntimeError(f"no {name} system user to run the server as, and no useradd to create it") from None
        subprocess.run([useradd, "--system", "--no-create-home", name], check=True)
        return pwd.getpwnam(name)


def as_user(user: pwd.struct_passwd | None) -> dict[str, t.Any]:
    """subprocess options running a command as ``user`` (none for the current user)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failure(exc: BaseException) -> str:
    """Why a server did not start, in a line or two: a command's stderr tail, or the error."""
    stderr = getattr(exc, "stderr", None)
    return (stderr.decode(errors="replace")[-300:] if stderr else str(exc)).strip()


POSTGRES_USER = "ledger"


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """One postgres process over a temporary data directory, with settings for speed over safety (fsync off).

    It comes from ``/usr/lib/postgresql/*/bin`` or ``initdb`` on PATH, else :func:`install`; as root it runs as
    the ``postgres`` system user. The superuser ``ledger`` signs in with ``password`` (never shown)."""

    def __init__(self, password: str | None = None, prefix: str = "ledger-pg-") -> None:
        with setup_lock():  # every pytest-xdist worker may get here
            bindir = _postgres_bindir()
            if bindir is None:
                install("postgresql", "PostgreSQL")
                bindir = _postgres_bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL was installed but initdb is not found")
            self.user = server_user("postgres")
        self.bindir = bindir
        self.password = password or "pg-" + secrets.token_hex(8)
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
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
                POSTGRES_USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
            **as_user(self.user),
        )
        password_file.unlink()
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
            **as_user(self.user),
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

    def dsn(self, database: str, password: str | None = None) -> str:
        return f"postgresql://{POSTGRES_USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database: its URL (password included; never printed)."""
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


def start_postgres(password: str | None = None, prefix: str = "ledger-pg-") -> tuple[PostgresServer | None, str]:
    """A started server and "", or None and why none could be started (nothing is left running then)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "the psycopg driver is not installed: pip install -e '.[postgres]'"
    server = None
    try:
        server = PostgresServer(password, prefix)
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        if server is not None:
            server.stop()
        return None, f"cannot start PostgreSQL: {failure(exc)}"
    return server, ""
