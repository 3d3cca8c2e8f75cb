"""From ``ledger_url`` to a SQLAlchemy engine (or, for the SQLite file's everyday reads, a driver connection), and
what to tell the user when the ledger cannot be used.

``ledger_url`` is a file path (SQLite), ``sqlite:///path``, or ``postgresql://user:password@host:port/db``
(mapped to the installed driver: psycopg 3, else psycopg2). Its password is a secret: every message built here
shows the URL through :func:`mask_url`, and a driver's own text only after the password is scrubbed from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import sqlite3
import types
import typing as t
from pathlib import Path
from urllib.parse import unquote

from target_encharge.errors import ConfigError
from target_encharge.redaction import MASK, mask_userinfo, word_pattern
from target_encharge.settings import DEFAULT_LEDGER_FILE, ledger_password


class LazyModule(types.ModuleType):
    """A module imported when one of its names is first used. SQLAlchemy is a third of the command's start-up
    (0.35 s of CPU), and a run on a SQLite ledger whose schema is current reads and writes its everyday rows
    through the driver: an unchanged rerun, a dry run, never imports it."""

    def __getattr__(self, name: str) -> t.Any:  # noqa: ANN401
        return getattr(importlib.import_module(self.__name__), name)  # the import lock makes it thread-safe


if t.TYPE_CHECKING:
    import sqlalchemy as sa
else:
    sa = LazyModule("sqlalchemy")

WRITE = "ledger_write"  # execution option: this transaction writes (SQLite takes the write lock at its start)

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][\w+.-]*)://")
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://)(?P<userinfo>[^/?#][^?#]*)@")  # greedy: to the last @
_QUERY_PASSWORD = re.compile(r"(?i)(\bpassword=)[^&#\s]*")
_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
_POSTGRES_DRIVERS = (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2"))

# What a driver's message means, in the user's words (searched in its lower-cased text, first match wins).
_MEANINGS = (
    (
        r"password authentication failed|authentication failed|no password supplied|role \".*\" does not exist",
        "the server refused the user name or password",
    ),
    (
        r"database is locked|database table is locked",
        "locked by another process for longer than {timeout:g} s; let the other run finish, or give each its "
        "own ledger",
    ),
    (
        r"file is not a database|database disk image is malformed",
        "not a readable SQLite ledger (a corrupt or foreign file); move it aside to start a new ledger",
    ),
    (r"unable to open database file", "cannot open the file: check that its directory exists and is writable"),
    (
        r"database \".*\" does not exist",
        "the server has no such database ({detail}); create it, or name one that exists",
    ),
    (
        r"connection refused|could not connect|timeout expired|timed out|could not translate host|name or service "
        r"not known|no route to host|server closed the connection|connection failed",
        "cannot reach the server ({detail}); check host, port and that it is running",
    ),
)


class LedgerError(ConfigError):
    """The sync ledger cannot be used: one line naming ``ledger_url`` (password masked) and what to do."""


def mask_url(url: str) -> str:
    """``url`` with its user information shown as ``***`` as a whole (user and password: a password cut at a raw
    ``@`` would show its tail), and a ``password=`` query parameter's value."""
    masked = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", url, count=1)
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", masked)


def _ambiguous(url: str) -> str | None:
    """What makes a server URL unreadable without guessing (a user name or password holding a raw ``@``, ``/``,
    ``?`` or ``#``, which the driver would take for the host, the path or the query), or None."""
    rest = url.partition("://")[2]
    if "@" not in rest:
        return None
    userinfo = rest[: rest.rfind("@")]
    for char, code in (("@", "%40"), ("/", "%2F"), ("?", "%3F"), ("#", "%23")):
        if char in userinfo:
            return (
                f"its user name or password holds a raw {char!r}, which makes the URL ambiguous (the rest would "
                f"be taken for the host); percent-encode {char} in the password as {code} (the URL is not shown: "
                "it holds a password)"
            )
    return None


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a ledger lives: the URL as configured, the SQLite file or the server's URL for SQLAlchemy, and the
    messages about it."""

    url: str
    file: Path | None = None  # the SQLite file (None: a server)
    server: sa.URL | None = None  # the URL SQLAlchemy opens for a server

    @property
    def shown(self) -> str:
        """The configured URL as it may be shown: password masked."""
        return mask_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.file is not None

    @property
    def target(self) -> sa.URL:
        """The URL SQLAlchemy opens."""
        if self.server is not None:
            return self.server
        return sa.URL.create("sqlite", database=str(self.file) if self.file is not None else None)

    def error(self, what: str) -> LedgerError:
        """A :class:`LedgerError` saying ``what`` about this ledger, on one line, without the password."""
        return LedgerError(f"ledger_url {self.shown}: {self.scrub(what)}")

    def scrub(self, text: str) -> str:
        """``text`` on one line, with any URL's user information and the password (as written and
        percent-decoded, where it stands as a token: it may be a common word) replaced by ``***``."""
        text = mask_userinfo(" ".join(text.split()))
        secret = ledger_password(self.url)
        forms = {secret, unquote(secret or ""), self.server.password if self.server is not None else None}
        words = word_pattern(str(form) for form in forms if form)
        return words.sub(MASK, text) if words is not None else text

    def explain(self, exc: BaseException, timeout: float) -> LedgerError:
        """The user's one line for a driver or SQLAlchemy error (its text scrubbed before it is quoted)."""
        cause = getattr(exc, "orig", None) or exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        lowered = str(cause).lower()
        for pattern, meaning in _MEANINGS:
            if re.search(pattern, lowered):
                return self.error(meaning.format(timeout=timeout, detail=detail))
        return self.error(f"{type(cause).__name__}: {detail}")

    def engine(self, timeout: float) -> sa.Engine:
        """A thread-safe engine: SQLite in WAL mode with a busy timeout, PostgreSQL with a connect timeout.

        Statements' parameters are hidden from SQLAlchemy's error text (they hold people's data)."""
        if self.is_sqlite:
            engine = sa.create_engine(
                self.target,
                hide_parameters=True,
                connect_args={"timeout": timeout, "check_same_thread": False},
            )
            sa.event.listen(engine, "connect", _sqlite_connected)
            sa.event.listen(engine, "begin", _sqlite_begin)
            return engine
        return sa.create_engine(
            self.target,
            hide_parameters=True,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, math.ceil(timeout))},
        )

    def driver(self, timeout: float) -> sqlite3.Connection:
        """A connection of the SQLite driver itself, set up as the engine's are (for the file's everyday reads
        and small writes, without SQLAlchemy)."""
        if self.file is None:
            raise self.error("not a SQLite ledger")
        connection = sqlite3.connect(self.file, timeout=timeout, check_same_thread=False)
        _sqlite_connected(connection)
        return connection


def _sqlite_connected(dbapi_connection: sqlite3.Connection, _record: t.Any = None) -> None:  # noqa: ANN401
    """Our own BEGINs (see :func:`_sqlite_begin`); WAL so readers never wait for writers, even across processes."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    """A writing transaction takes the write lock at once (waiting up to the busy timeout) instead of failing
    when it later upgrades from reading; a reading one takes no lock."""
    writes = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def locate(ledger_url: str | None) -> Location:
    """The :class:`Location` of ``ledger_url`` (None: the settings' default file in the working directory)."""
    url = ledger_url or DEFAULT_LEDGER_FILE
    scheme_match = _SCHEME.match(url)
    if scheme_match is None:  # a plain path: shown resolved, so the user sees which file
        path = Path(url).expanduser().resolve()
        return _sqlite_file(str(path), path)
    location = Location(url)  # for its messages until the real URL is known
    scheme = scheme_match["scheme"].lower()
    ambiguous = _ambiguous(url) if scheme in _POSTGRES_SCHEMES else None
    if ambiguous is not None:
        raise LedgerError(f"ledger_url: {ambiguous}")
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise location.error(f"not a URL SQLAlchemy can read ({type(exc).__name__})") from None
    if scheme in {"sqlite", "sqlite+pysqlite"}:
        if not parsed.database or parsed.database == ":memory:":
            raise location.error("an in-memory ledger would forget everything at the end of the run; name a file")
        return _sqlite_file(url, Path(parsed.database).expanduser())
    if scheme in _POSTGRES_SCHEMES:
        return Location(url, server=parsed.set(drivername=_postgres_driver(location, scheme)))
    raise location.error(
        f"unknown scheme {scheme!r}; use a file path, sqlite:///path or postgresql://user:password@host:port/db"
    )


def _sqlite_file(url: str, path: Path) -> Location:
    path = path.resolve()
    location = Location(url, file=path)
    if not path.parent.is_dir():
        raise location.error(f"the directory {path.parent} does not exist")
    return location


def _postgres_driver(location: Location, scheme: str) -> str:
    wanted = [(module, name) for module, name in _POSTGRES_DRIVERS if scheme in {name, "postgres", "postgresql"}]
    for module, name in wanted:
        if importlib.util.find_spec(module) is not None:
            return name
    raise location.error("PostgreSQL needs its driver: pip install 'target-encharge[postgres]'")
