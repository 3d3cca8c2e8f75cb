"""The sync ledger in a SQLite file, through the driver (``sqlite3``) and its SQL.

SQLAlchemy only creates or migrates the tables (schema.py): a run on a current ledger never imports it (a third
of the command's start-up). The driver lets other threads run during each step of a statement, and a thread that
wants the interpreter back waits up to 5 ms for it: so a chunk of rows goes in one statement (executemany, a row
per step, had the delivery threads queue behind the reading one), and a chunk of fingerprints comes back as one
row. Identities are bound as parameters, never read from JSON (SQLite's JSON reader would cut one at a NUL).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import typing as t

import msgspec
from typing_extensions import override

from target_encharge.ledger.connection import WRITE, LazyModule, Location
from target_encharge.ledger.lease import Execute
from target_encharge.ledger.names import ACCOUNTS, DELIVERIES, ENCHARGE_IDS, FAILURES, META, SCHEMA_VERSION, SCOPES
from target_encharge.ledger.store import (
    DELIVERY_COLUMNS,
    FAILURE_COLUMNS,
    FAILURE_UPDATES,
    DeliveredRow,
    DeliveryValues,
    FailureRow,
    Scope,
    ScopeRow,
    SyncLedger,
    chunks,
)

if t.TYPE_CHECKING:
    import sqlalchemy as sa

    from target_encharge.ledger import schema
else:  # imported only to create or migrate the tables
    sa = LazyModule("sqlalchemy")
    schema = LazyModule("target_encharge.ledger.schema")

CHUNK = 100  # rows per statement: 600 parameters, under the 999 SQLite allowed before 3.32

_VERSION = f"SELECT value FROM {META} WHERE name = 'schema_version'"  # noqa: S608
_SCOPE = f"SELECT id FROM {SCOPES} WHERE account = ? AND destination = ? AND stream = ?"  # noqa: S608
_NEW_SCOPE = f"INSERT INTO {SCOPES} (account, destination, stream) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"  # noqa: S608
_ACCOUNT = f"SELECT account FROM {ACCOUNTS} WHERE key_digest = ?"  # noqa: S608
_REMEMBER_ACCOUNT = (
    f"INSERT INTO {ACCOUNTS} (key_digest, account) VALUES (?, ?) "  # noqa: S608
    "ON CONFLICT (key_digest) DO UPDATE SET account = excluded.account"
)
_REMEMBER_ID = (
    f"INSERT INTO {ENCHARGE_IDS} (account, object_name, identity, encharge_id) VALUES (?, ?, ?, ?) "  # noqa: S608
    "ON CONFLICT (account, object_name, identity) DO UPDATE SET encharge_id = excluded.encharge_id"
)
_DELIVERED = f"SELECT identity, fingerprint, encharge_id, tags, delivered_at FROM {DELIVERIES} WHERE scope_id = ?"  # noqa: S608
_UPSERT_FAILURES = (
    f"INSERT INTO {FAILURES} ({', '.join(FAILURE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(':' + c for c in FAILURE_COLUMNS)}) ON CONFLICT (scope_id, identity) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in FAILURE_UPDATES)
    + f", attempts = {FAILURES}.attempts + 1"
)
_WAITING = (  # {conditions}: fixed column names, their values bound
    "SELECT f.identity, f.payload, f.reason, f.status, f.retryable, s.account, s.destination, s.stream, "  # noqa: S608
    f"f.first_failed_at, f.last_failed_at, f.attempts FROM {FAILURES} f JOIN {SCOPES} s ON s.id = f.scope_id "
    "WHERE {conditions} ORDER BY f.first_failed_at, f.scope_id, f.identity"
)
_FORGET = "DELETE FROM {table} WHERE scope_id IN (SELECT id FROM " + SCOPES + " WHERE {conditions})"  # noqa: S608
_STATUS_DELIVERIES = f"SELECT scope_id, count(*), max(delivered_at) FROM {DELIVERIES} GROUP BY scope_id"  # noqa: S608
_STATUS_FAILURES = (
    f"SELECT scope_id, reason, count(*) FROM {FAILURES} GROUP BY scope_id, reason "  # noqa: S608
    "ORDER BY count(*) DESC, reason"
)
_STATUS_SCOPES = f"SELECT id, account, destination, stream FROM {SCOPES} ORDER BY account, destination, stream"  # noqa: S608


@functools.lru_cache(maxsize=CHUNK)
def _upsert_sql(rows: int) -> str:
    """``rows`` deliveries in one statement; an id or tags given as NULL keep the known ones."""
    row = "(" + ", ".join("?" for _ in DELIVERY_COLUMNS) + ")"
    return (
        f"INSERT INTO {DELIVERIES} ({', '.join(DELIVERY_COLUMNS)}) VALUES {', '.join([row] * rows)} "  # noqa: S608
        "ON CONFLICT (scope_id, identity) DO UPDATE SET "
        "fingerprint = excluded.fingerprint, delivered_at = excluded.delivered_at, "
        + ", ".join(f"{c} = coalesce(excluded.{c}, {DELIVERIES}.{c})" for c in ("encharge_id", "tags"))
    )


@functools.lru_cache(maxsize=CHUNK)
def _fingerprints_sql(count: int) -> str:
    """The fingerprints of ``count`` identities as one row, a JSON array of [identity, fingerprint] pairs."""
    return (
        f"SELECT json_group_array(json_array(identity, fingerprint)) FROM {DELIVERIES} "  # noqa: S608
        f"WHERE scope_id = ? AND identity IN ({', '.join('?' * count)})"
    )


@functools.lru_cache(maxsize=CHUNK)
def _lookup_sql(count: int) -> str:
    return f"{_DELIVERED} AND identity IN ({', '.join('?' * count)})"


@functools.lru_cache(maxsize=CHUNK)
def _among_sql(count: int) -> str:
    """``identity IN`` ``count`` parameters, after a ``scope_id`` one."""
    return f"scope_id = ? AND identity IN ({', '.join('?' * count)})"


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection, begin: str) -> t.Iterator[sqlite3.Connection]:
    """One transaction (the driver's connections are in autocommit mode): committed when the block ends, rolled
    back when it raises."""
    connection.execute(begin)
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _conditions(matching: dict[str, str], prefix: str = "") -> str:
    """``matching``'s columns (fixed names, never a caller's text) each equal to a bound parameter."""
    return " AND ".join(f"{prefix}{column} = ?" for column in matching) or "1 = 1"


class SQLiteLedger(SyncLedger):
    """The ledger in a SQLite file: a driver connection kept for reads, another for writes (taking turns in
    ``_write_turn``), in WAL mode so readers never wait for the writer, even in other processes."""

    _LEASE_CLOCK = "((julianday('now') - 2440587.5) * 86400.0)"  # (the write transaction keeps the row)

    def __init__(self, location: Location, *, timeout: float, read_only: bool) -> None:
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        super().__init__(location, timeout=timeout, read_only=read_only)

    # -- opening -----------------------------------------------------------------------------------------------

    @override
    def _open(self) -> None:
        file = self.location.file
        if self.read_only and file is not None and not file.exists():
            self._present = False
            return
        if not self._open_driver():
            self._migrate()

    def _open_driver(self) -> bool:
        """The schema version read through the driver, in a transaction that takes the write lock (unless
        read-only) to prove the file can be written. False when the tables must be created or migrated."""
        with self._write_transaction(prove_only=True) as connection:
            self._check_file(connection)
            try:
                row = connection.execute(_VERSION).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                row = None  # a new file: no ledger in it yet
        found = self._found_version(row[0] if row else 0)
        return self.read_only or found == SCHEMA_VERSION

    def _check_file(self, connection: sqlite3.Connection) -> None:
        """Damage inside the file (bytes overwritten in a page) found at opening, before anything is sent, not
        when a lookup first reads the damaged page: ``PRAGMA quick_check`` (a few milliseconds for 100,000
        deliveries; the indexes' contents are not compared)."""
        (verdict,) = connection.execute("PRAGMA quick_check(1)").fetchone()  # (a foreign file: the guard's line)
        if verdict != "ok":
            raise self.location.error(
                "not a readable SQLite ledger (damaged: quick_check found "
                f"{' '.join(str(verdict).split())[:120]!r}); move it aside to start a new ledger, or restore a copy"
            )

    def _migrate(self) -> None:
        """Create or migrate the tables with SQLAlchemy (schema.py), its engine then let go."""
        with self._guard():
            engine = self.location.engine(self.timeout)
            try:
                with engine.connect() as connection:
                    connection.execution_options(**{WRITE: True})
                    found = self._found_version(schema.stored_version(connection))
                    if found < SCHEMA_VERSION:
                        schema.migrate(connection, found)
                    connection.commit()
            finally:
                engine.dispose()

    # -- the driver's connections ------------------------------------------------------------------------------

    @override
    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error, sa.exc.SQLAlchemyError)  # (asked only when one is raised: SQLAlchemy is there then)

    def _rows(self, statement: str, params: t.Sequence[t.Any] | dict[str, t.Any]) -> list[t.Any]:
        """The rows of one statement, on the connection kept for reads (a connection per batch would cost as
        much as the query)."""
        with self._guard(), self._read_lock:
            return self._reading().execute(statement, params).fetchall()

    def _reading(self) -> sqlite3.Connection:
        if self._reader is None:
            self._usable()
            self._reader = self.location.driver(self.timeout)
        return self._reader

    @contextlib.contextmanager
    def _read_transaction(self) -> t.Iterator[sqlite3.Connection]:
        """Several reads that see one moment of the file."""
        with self._guard(), self._read_lock, _transaction(self._reading(), "BEGIN") as connection:
            yield connection

    @contextlib.contextmanager
    def _write_transaction(self, *, prove_only: bool = False) -> t.Iterator[sqlite3.Connection]:
        """One transaction on the connection kept for writes, taking the write lock at its start (``prove_only``:
        opening, which reads only, and takes the lock only when the ledger may be written)."""
        if not prove_only:
            self._writable()
        with self._write_turn, self._guard():
            if self._writer is None:
                self._usable()
                self._writer = self.location.driver(self.timeout)
            with _transaction(self._writer, "BEGIN" if self.read_only else "BEGIN IMMEDIATE") as connection:
                yield connection

    @override
    @contextlib.contextmanager
    def _leasing(self, *, write: bool) -> t.Iterator[tuple[Execute, dict[str, str]]]:
        transaction = self._write_transaction() if write else self._read_transaction()
        with transaction as connection:
            yield connection.execute, self._lease_statements()

    @override
    def _query(self, statement: str, params: dict[str, t.Any]) -> list[tuple]:
        return self._rows(statement, params)

    @override
    def _write(self, steps: t.Sequence[tuple[str, dict[str, t.Any]]], *, fence: int | None) -> list[int]:
        with self._write_transaction() as connection:
            if fence is not None:
                self._fence(connection.execute, fence)
            return [connection.execute(statement, params).rowcount for statement, params in steps]

    @override
    def _close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._write_turn:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    # -- scopes ------------------------------------------------------------------------------------------------

    @override
    def _select_scope(self, scope: Scope) -> int | None:
        rows = self._rows(_SCOPE, (scope.account, scope.destination, scope.stream))
        return rows[0][0] if rows else None

    @override
    def _insert_scope(self, scope: Scope) -> None:
        with self._write_transaction() as connection:
            connection.execute(_NEW_SCOPE, (scope.account, scope.destination, scope.stream))

    # -- deliveries and failures -------------------------------------------------------------------------------

    @override
    def _upsert_deliveries(self, scope_id: int, values: list[DeliveryValues]) -> None:
        with self._write_transaction() as connection:
            self._fence(connection.execute, scope_id)
            for chunk in chunks(values, CHUNK):
                connection.execute(_upsert_sql(len(chunk)), [v for row in chunk for v in row])
            for chunk in chunks([row[1] for row in values], CHUNK):
                connection.execute(f"DELETE FROM {FAILURES} WHERE {_among_sql(len(chunk))}", (scope_id, *chunk))  # noqa: S608

    @override
    def _deliveries(self, scope_id: int, identities: t.Sequence[str] | None) -> list[DeliveredRow]:
        if identities is None:
            return self._rows(_DELIVERED, (scope_id,))
        with self._read_transaction() as connection:
            return [
                row
                for chunk in chunks(identities, CHUNK)
                for row in connection.execute(_lookup_sql(len(chunk)), (scope_id, *chunk))
            ]

    @override
    def _fingerprints(self, scope_id: int, identities: t.Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(identities, CHUNK):
            ((pairs,),) = self._rows(_fingerprints_sql(len(chunk)), (scope_id, *chunk))
            found.update(msgspec.json.decode(pairs))
        return found

    @override
    def _delete(self, scope_id: int, identities: t.Sequence[str], *, deliveries: bool) -> int:
        counted, *others = (DELIVERIES, FAILURES) if deliveries else (FAILURES,)
        removed = 0
        with self._write_transaction() as connection:
            self._fence(connection.execute, scope_id)
            for chunk in chunks(identities, CHUNK):
                among = _among_sql(len(chunk))
                removed += connection.execute(f"DELETE FROM {counted} WHERE {among}", (scope_id, *chunk)).rowcount  # noqa: S608
                for table in others:
                    connection.execute(f"DELETE FROM {table} WHERE {among}", (scope_id, *chunk))  # noqa: S608
        return removed

    @override
    def _upsert_failures(self, params: list[dict[str, t.Any]]) -> None:
        with self._write_transaction() as connection:
            for scope_id in {row["scope_id"] for row in params}:
                self._fence(connection.execute, scope_id)
            connection.executemany(_UPSERT_FAILURES, params)

    @override
    def _waiting(self, matching: dict[str, str], *, retryable_only: bool) -> list[FailureRow]:
        conditions = _conditions(matching, "s.") + (" AND f.retryable = 1" if retryable_only else "")
        return self._rows(_WAITING.format(conditions=conditions), tuple(matching.values()))

    # -- accounts, forget, status ------------------------------------------------------------------------------

    @override
    def _write_account(self, key_digest: str, account: str) -> None:
        with self._write_transaction() as connection:
            connection.execute(_REMEMBER_ACCOUNT, (key_digest, account))

    @override
    def _read_account(self, key_digest: str) -> str | None:
        rows = self._rows(_ACCOUNT, (key_digest,))
        return rows[0][0] if rows else None

    @override
    def _forget(self, matching: dict[str, str]) -> int:
        with self._write_transaction() as connection:
            return sum(
                connection.execute(
                    _FORGET.format(table=table, conditions=_conditions(matching)), tuple(matching.values())
                ).rowcount
                for table in (DELIVERIES, FAILURES)
            )

    @override
    def _write_encharge_ids(self, account: str, object_name: str, ids: dict[str, str]) -> None:
        with self._write_transaction() as connection:
            connection.executemany(_REMEMBER_ID, [(account, object_name, i, e) for i, e in sorted(ids.items())])

    @override
    def _forget_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> None:
        with self._write_transaction() as connection:
            for chunk in chunks(identities, CHUNK):
                marks = ", ".join("?" * len(chunk))
                connection.execute(
                    f"DELETE FROM {ENCHARGE_IDS} WHERE account = ? AND object_name = ? AND identity IN ({marks})",  # noqa: S608
                    (account, object_name, *chunk),
                )

    @override
    def _read_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(identities, CHUNK):
            marks = ", ".join("?" * len(chunk))
            statement = (
                f"SELECT identity, encharge_id FROM {ENCHARGE_IDS} "  # noqa: S608
                f"WHERE account = ? AND object_name = ? AND identity IN ({marks})"
            )
            found.update(self._rows(statement, (account, object_name, *chunk)))
        return found

    @override
    def _status(self) -> tuple[dict[int, tuple[int, str]], dict[int, dict[str, int]], list[ScopeRow]]:
        with self._read_transaction() as connection:
            known = {scope_id: (records, last) for scope_id, records, last in connection.execute(_STATUS_DELIVERIES)}
            waiting: dict[int, dict[str, int]] = {}
            for scope_id, reason, count in connection.execute(_STATUS_FAILURES):
                waiting.setdefault(scope_id, {})[reason] = count
            return known, waiting, connection.execute(_STATUS_SCOPES).fetchall()

    @override
    def _plain(self, statement: str, params: t.Mapping[str, t.Any], *, write: bool) -> list[tuple]:
        if not write:
            return self._rows(statement, params)  # type: ignore[arg-type]
        with self._write_transaction() as connection:
            return connection.execute(statement, params).fetchall()
