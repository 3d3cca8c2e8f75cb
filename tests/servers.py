"""Real database servers for the tests and the benchmarks, without pytest: one home for what they share.

A server comes from the machine; on a fresh Debian/Ubuntu machine running as root, :func:`install` gets it with
apt-get. Every finding, installing and user-creating step runs under :func:`setup_lock`, so one process at a time
does it (the pytest-xdist workers, the benchmarks, another session). As root a server runs as its own system user
(:func:`server_user`, created when missing), since PostgreSQL and MariaDB refuse or dislike running as root. A
server listens on 127.0.0.1 only (:func:`free_port`), in a temporary data directory removed when it stops.

:class:`Server` is what every kind shares (finding or installing it, its user, its port and directory, waiting
for it to answer, stopping it); :class:`PostgresServer` is one kind, tests/mariadb.py's ``MariaDBServer`` another.
:func:`start` starts one or says why it could not; :func:`serve` is a session fixture's body (skipped off CI,
failing on CI when the server cannot start), the only place pytest is imported. tests/postgres.py and
tests/mariadb.py hold the fixtures; benchmarks/run.py starts its server with :func:`start_postgres`.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
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


class Server:
    """One server process over a temporary data directory (``root``), on 127.0.0.1 at ``port``; removed by
    :meth:`stop`. A kind of server says what it is (``product``, its Debian ``package``, its ``system_user``),
    how to find its programs (:meth:`locate`), how to start it (:meth:`start`, with :meth:`initialise` and
    :meth:`launch`), when it answers (:meth:`accepts`) and how it stops (``stop_signal``)."""

    product = ""
    package = ""
    system_user = ""
    stop_signal = signal.SIGTERM

    def __init__(self, prefix: str) -> None:
        with setup_lock():  # every pytest-xdist worker may get here
            if not self.locate():
                install(self.package, self.product)
                if not self.locate():
                    raise RuntimeError(f"{self.product} was installed but its programs are not found")
            self.user = server_user(self.system_user)
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def locate(self) -> bool:
        """Finds the server's programs on this machine (keeping where they are); False when they are not here."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def accepts(self) -> bool:
        """Whether the server answers now."""
        raise NotImplementedError

    def own(self, *paths: Path) -> None:
        """Gives ``root`` (and ``paths``) to the server's user, and keeps everyone else out of ``root``."""
        if self.user is not None:
            for path in (self.root, *paths):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.root.chmod(0o700)

    def initialise(self, command: list[str]) -> None:
        """Runs the command making the data directory, as the server's user; its stderr is kept for the error."""
        subprocess.run(
            command,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
            **as_user(self.user),
        )

    def launch(self, command: list[str], stderr: t.IO[bytes] | int = subprocess.DEVNULL) -> None:
        """Starts the server process, as the server's user, and waits until it answers."""
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.root, **as_user(self.user)
        )
        name = Path(command[0]).name
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited at start: {self.log_tail()}")
            if self.accepts():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not accept connections: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


S = t.TypeVar("S", bound=Server)


def start(make: t.Callable[[], S], product: str) -> tuple[S | None, str]:
    """A server made by ``make`` and started, and ""; or None and why it could not start (nothing left running)."""
    server = None
    try:
        server = make()
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if server is not None:
            server.stop()
        return None, f"cannot start {product}: {failure(exc)}"
    return server, ""


def serve(started: tuple[S | None, str], product: str) -> t.Iterator[S]:
    """A session fixture's body: the started server, stopped at the end; when there is none, the tests needing it
    are skipped, except on CI (``CI`` set), where they fail loudly. (pytest is imported here only.)"""
    import pytest

    server, why = started
    if server is None:
        if os.environ.get("CI", "").lower() not in {"", "0", "false"}:
            pytest.fail(f"{product} is required on CI: {why}", pytrace=False)
        pytest.skip(why)
    try:
        yield server
    finally:
        server.stop()


POSTGRES_USER = "ledger"


class PostgresServer(Server):
    """One postgres process, with settings for speed over safety (fsync off).

    It comes from ``/usr/lib/postgresql/*/bin`` or ``initdb`` on PATH, else :func:`install`; as root it runs as
    the ``postgres`` system user. The superuser ``ledger`` signs in with ``password`` (never shown)."""

    product, package, system_user = "PostgreSQL", "postgresql", "postgres"
    stop_signal = signal.SIGINT  # fast shutdown

    def __init__(
        self, password: str | None = None, prefix: str = "ledger-pg-", max_connections: int | None = None
    ) -> None:
        super().__init__(prefix)
        self.password = password or "pg-" + secrets.token_hex(8)
        self.max_connections = max_connections  # None: PostgreSQL's own (100)

    def locate(self) -> bool:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        on_path = shutil.which("initdb")
        bindir = Path(found[-1]).parent if found else Path(on_path).parent if on_path else None
        if bindir is not None:
            self.bindir = bindir
        return bindir is not None

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        self.own(password_file)
        self.initialise(
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
            ]
        )
        password_file.unlink()
        self.launch(
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
                *(["-c", f"max_connections={self.max_connections}"] if self.max_connections else []),
            ],
            stderr=(self.root / "server.log").open("wb"),
        )

    def accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def dsn(self, database: str, password: str | None = None) -> str:
        return f"postgresql://{POSTGRES_USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database: its URL (password included; never printed)."""
        import psycopg

        name = "ledger_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


def start_postgres(
    password: str | None = None, prefix: str = "ledger-pg-", max_connections: int | None = None
) -> tuple[PostgresServer | None, str]:
    """A started server and "", or None and why none could be started (nothing is left running then)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "the psycopg driver is not installed: pip install -e '.[postgres]'"
    return start(lambda: PostgresServer(password, prefix, max_connections), "PostgreSQL")
