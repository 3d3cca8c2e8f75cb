"""A PostgreSQL server for the benchmarks, started as the tests start theirs (tests/postgres.py), without pytest.

The server comes from the machine (``/usr/lib/postgresql/*/bin``, or ``initdb`` on PATH); running as root on a
Debian/Ubuntu machine without one, it is installed with apt-get. As root it runs as the ``postgres`` system user
(created when missing), since PostgreSQL refuses to run as root. It listens on 127.0.0.1 only, with a password, in
a temporary data directory removed by :meth:`PostgresServer.stop`. :func:`start` returns None, with the reason,
when no server can be started: the benchmarks needing it are then skipped.
"""

from __future__ import annotations

import fcntl
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

USER = "ledger"
START_TIMEOUT = 60.0
#: The tests' lock: one apt-get (or useradd) at a time, whoever runs it.
SETUP_LOCK = Path(tempfile.gettempdir()) / "target-encharge-tests-postgres-setup.lock"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("PostgreSQL is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise RuntimeError("no postgres system user to run the server as, and no useradd to create it") from None
        subprocess.run([useradd, "--system", "--no-create-home", "postgres"], check=True)
        return pwd.getpwnam("postgres")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One postgres process over a temporary data directory, with the tests' settings (fsync off)."""

    def __init__(self) -> None:
        with SETUP_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            bindir = _bindir()
            if bindir is None:
                _install()
                bindir = _bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL was installed but initdb is not found")
            self.user = _server_user()
        self.bindir = bindir
        self.password = "pg-" + secrets.token_hex(8)
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def _as_server_user(self) -> dict[str, t.Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

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
                str(self.root / "data"),
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
        password_file.unlink()
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.root / "data"),
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

    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

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


def start() -> tuple[PostgresServer | None, str]:
    """A started server and "", or None and why none could be started."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "the psycopg driver is not installed: pip install -e '.[postgres]'"
    server = None
    try:
        server = PostgresServer()
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace")[-300:] if getattr(exc, "stderr", None) else str(exc)
        if server is not None:
            server.stop()
        return None, f"cannot start PostgreSQL: {detail.strip()}"
    return server, ""
