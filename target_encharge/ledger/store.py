"""The sync ledger's store: what was delivered, per Encharge account, destination, stream and record identity,
and the failures waiting to be sent again.

Every method is one transaction and safe to call from several threads; two processes sharing one ledger (other
streams or accounts) never corrupt each other: upserts, SQLite in WAL mode with a busy timeout, writes taking
their lock at the start. Lookups and writes go in chunks. Nothing here says "delivered" unless the caller does,
after Encharge answered 2xx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import sqlite3
import threading
import types
import typing as t
from decimal import Decimal

import msgspec

from target_encharge import encoding
from target_encharge.ledger.connection import WRITE, LazyModule, locate
from target_encharge.ledger.fingerprint import canonical_json
from target_encharge.ledger.names import ACCOUNTS, ACCOUNTS_SINCE, DELIVERIES, FAILURES, META, SCHEMA_VERSION, SCOPES

if t.TYPE_CHECKING:
    import sqlalchemy as sa

    from target_encharge.ledger import schema
else:  # imported when first used: on SQLite, a run's everyday reads and writes go through the driver (_driver)
    sa = LazyModule("sqlalchemy")
    schema = LazyModule("target_encharge.ledger.schema")

CHUNK = 1000  # identities per statement
DEFAULT_TIMEOUT = 30.0  # seconds to wait for a locked SQLite file or to connect to a server

_payload_decoder = msgspec.json.Decoder(float_hook=Decimal)  # numbers come back with every digit


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Where entries belong: one Encharge account, one destination (template, object name or URL), one stream."""

    account: str
    destination: str
    stream: str


class DeliveryRow(t.Protocol):
    """What :meth:`SyncLedger.mark_delivered` reads of each row: a :class:`Delivered`, or anything that has its
    attributes (the run hands over its own marks as they are, not a copy of each)."""

    @property
    def identity(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def encharge_id(self) -> str | None: ...
    @property
    def source_key(self) -> t.Mapping[str, t.Any] | None: ...
    @property
    def tags(self) -> frozenset[str] | None: ...
    @property
    def delivered_at(self) -> datetime.datetime | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """What was last delivered for one identity. Written by the caller after a 2xx; read back by lookups.

    ``source_key`` is the record's key properties (so a deleted record carrying only them maps back to its
    identity); ``tags`` the tags this target added (add_tag, for mirror); ``delivered_at`` is set to now when
    written as None."""

    identity: str
    fingerprint: str
    encharge_id: str | None = None
    source_key: t.Mapping[str, t.Any] | None = None
    tags: frozenset[str] | None = None
    delivered_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A record that failed: its payload as it would be sent again (after exclude_attributes), and why.

    ``status`` is Encharge's HTTP status (None for a timeout, a dropped connection or a refusal before
    sending); ``retryable`` says whether sending it again can pass (429, 5xx, timeouts, a tag's person not
    there yet) or whether it waits for the source to change it."""

    identity: str
    payload: dict[str, t.Any]
    reason: str
    status: int | None = None
    retryable: bool = True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WaitingFailure(Failure):
    """A failure as the ledger holds it: where it belongs, when it first and last failed, how many times."""

    scope: Scope
    first_failed_at: datetime.datetime
    last_failed_at: datetime.datetime
    attempts: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream of one account and destination, as ``status`` reports it."""

    scope: Scope
    records: int
    last_delivery: datetime.datetime | None
    failures_waiting: int
    reasons: dict[str, int]  # reason -> failures waiting for it, most frequent first


def _stamp(moment: datetime.datetime | None = None) -> str:
    """``moment`` (default: now) as the ledger stores it: ISO 8601 in UTC, microseconds, one fixed width."""
    moment = datetime.datetime.now(datetime.timezone.utc) if moment is None else moment
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _moment(stamp: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(stamp) if stamp is not None else None


_DELIVERY_COLUMNS = ("scope_id", "identity", "fingerprint", "delivered_at", "encharge_id", "source_key", "tags")
# A delivery replaces the fingerprint and time; an id, source key or tags given as None keep the known ones.
# Deliveries are written through the driver, a chunk in one statement: on SQLite as many rows of parameters
# (the driver lets other threads run during each step of a statement, and a thread that wants the interpreter
# back waits up to 5 ms for it: a row per step, as executemany goes, had the delivery threads queue behind the
# reading one); on PostgreSQL its columns sent as arrays that the server unnests (a tenth of the time of a
# statement per row, even pipelined).
_UPSERT_DELIVERIES = (
    f"INSERT INTO {DELIVERIES} ({', '.join(_DELIVERY_COLUMNS)}) {{rows}} "
    "ON CONFLICT (scope_id, identity) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, delivered_at = excluded.delivered_at, "
    + ", ".join(f"{c} = coalesce(excluded.{c}, {DELIVERIES}.{c})"
                for c in ("encharge_id", "source_key", "tags"))
)
_SQLITE_CHUNK = 100  # rows per SQLite statement: 700 parameters, under the 999 SQLite allowed before 3.32


@functools.lru_cache(maxsize=_SQLITE_CHUNK)
def _sqlite_upsert_deliveries(rows: int) -> str:
    row = "(" + ", ".join("?" for _ in _DELIVERY_COLUMNS) + ")"
    return _UPSERT_DELIVERIES.format(rows="VALUES " + ", ".join([row] * rows))


@functools.lru_cache(maxsize=_SQLITE_CHUNK)
def _sqlite_fingerprints(count: int) -> str:
    """The fingerprints of ``count`` identities as one row, a JSON array of [identity, fingerprint] pairs: one
    step (see above), and the identities bound as parameters (SQLite's JSON reader would cut one at a NUL)."""
    return (f"SELECT json_group_array(json_array(identity, fingerprint)) FROM {DELIVERIES} "  # noqa: S608
            f"WHERE scope_id = ? AND identity IN ({', '.join('?' * count)})")


@functools.lru_cache(maxsize=_SQLITE_CHUNK)
def _sqlite_delete_failures(count: int) -> str:
    return f"DELETE FROM {FAILURES} WHERE scope_id = ? AND identity IN ({', '.join('?' * count)})"  # noqa: S608


_POSTGRES_UPSERT_DELIVERIES = _UPSERT_DELIVERIES.format(
    rows="SELECT * FROM unnest(%s::integer[], " + ", ".join("%s::text[]" for _ in _DELIVERY_COLUMNS[1:]) + ")"  # noqa: S608
)
# ... and on SQLite, a run's everyday reads and writes go through the driver too: the skip-unchanged check (half
# the time of a SQLAlchemy select, for every batch), the scopes, the accounts, the failures to send again. A run
# on a current SQLite ledger so never imports SQLAlchemy (a third of the start-up).
_SQLITE_VERSION = f"SELECT value FROM {META} WHERE name = 'schema_version'"  # noqa: S608
_SQLITE_SCOPE = f"SELECT id FROM {SCOPES} WHERE account = ? AND destination = ? AND stream = ?"  # noqa: S608
_SQLITE_NEW_SCOPE = (
    f"INSERT INTO {SCOPES} (account, destination, stream) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"  # noqa: S608
)
_SQLITE_ACCOUNT = f"SELECT account FROM {ACCOUNTS} WHERE key_digest = ?"  # noqa: S608
_SQLITE_REMEMBER_ACCOUNT = (
    f"INSERT INTO {ACCOUNTS} (key_digest, account) VALUES (?, ?) "  # noqa: S608
    "ON CONFLICT (key_digest) DO UPDATE SET account = excluded.account"
)
_SQLITE_WAITING = (  # {conditions}: fixed column names, their values bound
    "SELECT f.identity, f.payload, f.reason, f.status, f.retryable, s.account, s.destination, s.stream, "  # noqa: S608
    f"f.first_failed_at, f.last_failed_at, f.attempts FROM {FAILURES} f JOIN {SCOPES} s ON s.id = f.scope_id "
    "WHERE {conditions} ORDER BY f.first_failed_at, f.scope_id, f.identity"
)


def _when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp)


def _chunks(items: t.Sequence, size: int = CHUNK) -> t.Iterator[t.Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_or_none(value: t.Any) -> str | None:  # noqa: ANN401
    return None if value is None else canonical_json(value)


class SyncLedger:
    """The sync ledger at ``ledger_url`` (see :func:`target_encharge.ledger.connection.locate`).

    Opening creates or migrates its tables, and proves it can write (a locked file fails here, before anything
    is sent); ``read_only`` opens without writing anything, creating nothing (an absent ledger reads as empty).
    Every failure to use it raises :class:`~target_encharge.ledger.connection.LedgerError`, one line naming
    ``ledger_url`` with its password masked."""

    def __init__(
        self, ledger_url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, read_only: bool = False
    ) -> None:
        self.location = locate(ledger_url)
        self.timeout = timeout
        self.read_only = read_only
        self._scope_ids: dict[Scope, int] = {}
        # this process's writers take turns here: SQLite's busy handler would make them sleep (up to 100 ms a
        # try) for each other's locks; other processes still wait on the file's lock (the busy timeout)
        self._write_turn = threading.RLock()
        self._engine: sa.Engine | None = None  # made when SQLAlchemy is first needed (at once on a server)
        self._engine_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None  # SQLite: the driver's connection for reads (_driver_rows)
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None  # ... and for writes (_driver_writing, in _write_turn)
        self._present = True
        self._version = SCHEMA_VERSION  # the schema version of the tables (older only when opened read-only)
        self._closed = False
        self._postgres = not self.location.is_sqlite
        self._chunk = CHUNK if self._postgres else _SQLITE_CHUNK  # identities per statement
        file = self.location.file
        if read_only and file is not None and not file.exists():
            self._present = False
            return
        try:
            if self._postgres or not self._open_driver():
                self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        with self._guard(), self._connection(write=not self.read_only) as connection:
            found = self._known_version(schema.stored_version(connection))
            if self.read_only:
                self._present, self._version = found > 0, found
            elif found < SCHEMA_VERSION:
                schema.migrate(connection, found)
            connection.commit()

    def _open_driver(self) -> bool:
        """SQLite: the schema version read through the driver, in a transaction that takes the write lock (unless
        read-only) to prove the file can be written. False when the tables must be created or migrated, which
        SQLAlchemy does (:meth:`_open`)."""
        with self._driver_writing(prove_only=True) as connection:
            try:
                row = connection.execute(_SQLITE_VERSION).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                row = None  # a new file: no ledger in it yet
        found = self._known_version(int(row[0]) if row else 0)
        if self.read_only:
            self._present, self._version = found > 0, found
            return True
        return found == SCHEMA_VERSION

    def _known_version(self, found: int) -> int:
        if found > SCHEMA_VERSION:
            raise self.location.error(
                f"written by a newer target-encharge (ledger schema version {found}, this one knows up to "
                f"{SCHEMA_VERSION}); upgrade target-encharge"
            )
        return found

    @functools.cached_property
    def _upsert_failure(self) -> sa.Insert:
        return self._failure_upsert(self._dialect)

    @functools.cached_property
    def _select_fingerprints(self) -> sa.Select:
        """Built once: the skip-unchanged check (on a server) runs for every batch sent."""
        table = schema.deliveries
        listed = sa.bindparam("listed", type_=self._listing_type())
        return self._select_known([table.c.identity, table.c.fingerprint], sa.bindparam("scope_id"), listed)

    # -- plumbing ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> t.Iterator[None]:
        """Driver and SQLAlchemy errors become the user's one line (never their raw text with a password)."""
        try:
            yield
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
            raise self.location.explain(exc, self.timeout) from None

    def _usable(self) -> None:
        if self._closed or not self._present:
            raise self.location.error("the ledger is closed" if self._present else "the ledger does not exist")

    def _get_engine(self) -> sa.Engine:
        with self._engine_lock:
            self._usable()
            if self._engine is None:
                self._engine = self.location.engine(self.timeout)
            return self._engine

    @contextlib.contextmanager
    def _connection(self, *, write: bool) -> t.Iterator[sa.Connection]:
        with self._get_engine().connect() as connection:
            if write:
                connection.execution_options(**{WRITE: True})
            yield connection

    @contextlib.contextmanager
    def _reading(self) -> t.Iterator[sa.Connection | None]:
        """A connection for reads, or None when a read-only ledger does not exist yet."""
        if not self._present:
            yield None
            return
        with self._guard(), self._connection(write=False) as connection:
            yield connection

    @contextlib.contextmanager
    def _writing(self) -> t.Iterator[sa.Connection]:
        """One transaction that writes: committed when the block ends, rolled back when it raises."""
        if self.read_only:
            raise self.location.error("opened read-only: nothing may be written")
        with self._write_turn, self._guard(), self._connection(write=True) as connection, connection.begin():
            yield connection

    @property
    def _dialect(self) -> types.ModuleType:
        """SQLAlchemy's dialect module for the ledger's database (PostgreSQL's is imported only when it is used:
        with its drivers, a tenth of the command's start-up)."""
        if self._postgres:
            from sqlalchemy.dialects import postgresql

            return postgresql
        from sqlalchemy.dialects import sqlite

        return sqlite

    def _listing_type(self) -> sa.types.TypeEngine:
        return self._dialect.ARRAY(sa.Text)

    def _listed(self, identities: t.Sequence[str] | sa.BindParameter) -> sa.TableValuedAlias:
        """PostgreSQL: ``identities`` (or a bind parameter to fill with their list) as a table with one column,
        ``value``, sent as one array parameter: one statement compiled once whatever the count, which the server
        joins by probing its primary key. (SQLite binds a parameter each: see :meth:`_among`.)"""
        listing = (identities if isinstance(identities, sa.BindParameter)
                   else sa.literal(list(identities), self._listing_type()))
        return sa.func.unnest(listing).table_valued("value").render_derived()

    def _select_known(
        self, columns: t.Sequence[sa.ColumnElement], scope_id: int | sa.BindParameter,
        identities: t.Sequence[str] | sa.BindParameter,
    ) -> sa.Select:
        """The deliveries of ``identities`` in the scope: on PostgreSQL a primary-key probe per identity, as a
        lateral subquery with ``LIMIT 1`` (the planner cannot merge it into a join, which it would run by reading
        the scope's every row into a hash: ten times slower for 1,000 identities in 100,000); on SQLite ``IN``
        the list (a join there would scan the scope's rows)."""
        table = schema.deliveries
        if self._postgres:
            listed = self._listed(identities)
            probe = sa.select(*columns).where(table.c.scope_id == scope_id, table.c.identity == listed.c.value)
            found = probe.limit(sa.literal_column("1")).lateral()  # a literal: the plan is made knowing it
            return sa.select(*(found.c[column.name] for column in columns)).select_from(listed).join(found, sa.true())
        return sa.select(*columns).where(table.c.scope_id == scope_id, self._among(table.c.identity, identities))

    def _among(self, column: sa.ColumnElement, identities: t.Sequence[str] | sa.BindParameter) -> sa.ColumnElement:
        """``column IN identities``: on PostgreSQL one array parameter, unnested; on SQLite a parameter each
        (SQLite's JSON reader would cut an identity at a NUL character), in chunks of :data:`_SQLITE_CHUNK`."""
        if self._postgres:
            return column.in_(sa.select(self._listed(identities).c.value))
        return column.in_(list(identities))

    def _find_scope(self, connection: sa.Connection, scope: Scope) -> int | None:
        if scope in self._scope_ids:
            return self._scope_ids[scope]
        if not self._postgres:
            return self._driver_scope(scope)
        found = connection.execute(
            sa.select(schema.scopes.c.id).where(
                schema.scopes.c.account == scope.account,
                schema.scopes.c.destination == scope.destination,
                schema.scopes.c.stream == scope.stream,
            )
        ).scalar()
        if found is not None:
            self._scope_ids[scope] = found
        return found

    def _driver_scope(self, scope: Scope) -> int | None:
        """SQLite: the id of ``scope`` if it has a row, read through the driver (None: nothing was written in it
        yet, or a read-only ledger that does not exist)."""
        if scope not in self._scope_ids and self._present:
            rows = self._driver_rows(_SQLITE_SCOPE, (scope.account, scope.destination, scope.stream))
            if rows:
                self._scope_ids[scope] = rows[0][0]
        return self._scope_ids.get(scope)

    def _scope_id(self, scope: Scope) -> int:
        """The id of ``scope``, its row created (in a transaction of its own) the first time it is written."""
        if scope in self._scope_ids:
            return self._scope_ids[scope]
        if not self._postgres:
            with self._driver_writing() as connection:
                connection.execute(_SQLITE_NEW_SCOPE, (scope.account, scope.destination, scope.stream))
            found = self._driver_scope(scope)
            if found is None:  # never gone: forget keeps scopes
                raise self.location.error(f"the stream {scope.stream!r} could not be recorded; run again")
            return found
        with self._writing() as connection:
            found = self._find_scope(connection, scope)
            if found is None:
                connection.execute(
                    self._dialect.insert(schema.scopes)
                    .values(account=scope.account, destination=scope.destination, stream=scope.stream)
                    .on_conflict_do_nothing()
                )
        with self._reading() as connection:
            found = self._find_scope(connection, scope) if connection is not None else None
        if found is None:  # inserted just above, or by another process: never gone, forget keeps scopes
            raise self.location.error(f"the stream {scope.stream!r} could not be recorded; run again")
        return found

    @staticmethod
    def _upsert(dialect: t.Any, table: sa.Table,  # noqa: ANN401
                updates: t.Callable[[t.Any, t.Any], dict[str, t.Any]]) -> sa.Insert:
        """An insert into ``table`` that, for an identity the scope holds already, sets ``updates(new, old)``."""
        insert = dialect.insert(table)
        return insert.on_conflict_do_update(index_elements=[table.c.scope_id, table.c.identity],
                                            set_=updates(insert.excluded, table.c))

    @classmethod
    def _failure_upsert(cls, dialect: t.Any) -> sa.Insert:  # noqa: ANN401
        """A failure already waiting takes the new payload and reason, and counts one more attempt."""
        return cls._upsert(dialect, schema.failures, lambda new, old: {
            **{name: getattr(new, name) for name in ("payload", "reason", "status", "retryable", "last_failed_at")},
            "attempts": old.attempts + 1,
        })

    @staticmethod
    def _delivered(row: sa.Row) -> Delivered:
        return Delivered(
            identity=row.identity,
            fingerprint=row.fingerprint,
            encharge_id=row.encharge_id,
            source_key=msgspec.json.decode(row.source_key) if row.source_key is not None else None,
            tags=frozenset(msgspec.json.decode(row.tags)) if row.tags is not None else None,
            delivered_at=_moment(row.delivered_at),
        )

    # -- deliveries --------------------------------------------------------------------------------------------

    def _read_chunks(self, scope: Scope, identities: t.Iterable[str],
                     read: t.Callable[[sa.Connection, int, t.Sequence[str]], None]) -> None:
        """``read(connection, scope_id, chunk)`` for each chunk of ``identities`` (nothing when the scope is not
        known yet)."""
        wanted = list(dict.fromkeys(identities))
        with self._reading() as connection:
            if connection is None or not wanted:
                return
            scope_id = self._find_scope(connection, scope)
            if scope_id is None:
                return
            for chunk in _chunks(wanted, self._chunk):
                read(connection, scope_id, chunk)

    def lookup(self, scope: Scope, identities: t.Iterable[str]) -> dict[str, Delivered]:
        """What was last delivered for each of ``identities`` that the ledger knows in ``scope``."""
        found: dict[str, Delivered] = {}
        columns = list(schema.deliveries.c)

        def read(connection: sa.Connection, scope_id: int, chunk: t.Sequence[str]) -> None:
            for row in connection.execute(self._select_known(columns, scope_id, chunk)):
                found[row.identity] = self._delivered(row)

        self._read_chunks(scope, identities, read)
        return found

    def fingerprints(self, scope: Scope, identities: t.Iterable[str]) -> dict[str, str]:
        """The fingerprint last delivered for each of ``identities`` the ledger knows in ``scope``: the
        skip-unchanged check, lighter than :meth:`lookup`."""
        found: dict[str, str] = {}
        if not self._postgres:  # SQLite: the check of every batch, through the driver
            scope_id = self._driver_scope(scope)
            if scope_id is not None:
                for chunk in _chunks(list(dict.fromkeys(identities)), _SQLITE_CHUNK):
                    ((pairs,),) = self._driver_rows(_sqlite_fingerprints(len(chunk)), (scope_id, *chunk))
                    found.update(msgspec.json.decode(pairs))
            return found

        def read(connection: sa.Connection, scope_id: int, chunk: t.Sequence[str]) -> None:
            listing = {"scope_id": scope_id, "listed": list(chunk)}
            found.update(connection.execute(self._select_fingerprints, listing).all())

        self._read_chunks(scope, identities, read)
        return found

    def _driver_rows(self, statement: str, params: tuple) -> list[tuple]:
        """The rows of one SQLite statement, on the driver's connection kept for reads (a pool checkout and return
        per batch cost as much as the query)."""
        with self._guard(), self._read_lock:
            if self._reader is None:
                self._usable()
                self._reader = self.location.driver(self.timeout)
            return self._reader.execute(statement, params).fetchall()

    @contextlib.contextmanager
    def _driver_writing(self, *, prove_only: bool = False) -> t.Iterator[sqlite3.Connection]:
        """One SQLite transaction on the driver's connection kept for writes, taking the write lock at its start
        (``prove_only``: opening, which reads only, and takes the lock only when the ledger may be written)."""
        if self.read_only and not prove_only:
            raise self.location.error("opened read-only: nothing may be written")
        with self._write_turn, self._guard():
            if self._writer is None:
                self._usable()
                self._writer = self.location.driver(self.timeout)
            connection = self._writer
            connection.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def mark_delivered(self, scope: Scope, rows: t.Iterable[DeliveryRow]) -> None:
        """Record that Encharge accepted ``rows`` (call only after a 2xx): each replaces what its identity held
        (an id, source key or tags given as None keep the ones known) and leaves the failures waiting."""
        latest = {row.identity: row for row in rows}  # one write per identity: the last one given
        if not latest:
            return
        scope_id, now = self._scope_id(scope), _stamp()
        ordered = (sorted(latest.values(), key=lambda row: row.identity) if self._postgres  # one lock order for
                   else latest.values())  # every writer on a server (a SQLite writer locks the whole file)
        values = [  # in the order of _DELIVERY_COLUMNS
            (scope_id, row.identity, row.fingerprint, _stamp(row.delivered_at) if row.delivered_at else now,
             row.encharge_id, _json_or_none(row.source_key),
             _json_or_none(sorted(row.tags) if row.tags is not None else None))
            for row in ordered
        ]
        if not self._postgres:  # through the driver, a chunk per statement (see _sqlite_upsert_deliveries)
            with self._driver_writing() as connection:
                for chunk in _chunks(values, _SQLITE_CHUNK):
                    connection.execute(_sqlite_upsert_deliveries(len(chunk)), [v for row in chunk for v in row])
                for chunk in _chunks(list(latest), _SQLITE_CHUNK):
                    connection.execute(_sqlite_delete_failures(len(chunk)), (scope_id, *chunk))
            return
        with self._writing() as connection:
            for chunk in _chunks(values):
                columns = tuple(list(column) for column in zip(*chunk, strict=True))
                connection.exec_driver_sql(_POSTGRES_UPSERT_DELIVERIES, columns)
                self._delete(connection, schema.failures, scope_id, columns[1])

    def known(self, scope: Scope) -> dict[str, Delivered]:
        """Everything delivered in ``scope`` (for mirror: what the target wrote and may remove)."""
        table = schema.deliveries
        with self._reading() as connection:
            scope_id = self._find_scope(connection, scope) if connection is not None else None
            if connection is None or scope_id is None:
                return {}
            rows = connection.execute(sa.select(table).where(table.c.scope_id == scope_id))
            return {row.identity: self._delivered(row) for row in rows}

    def by_source_key(self, scope: Scope, key: t.Mapping[str, t.Any]) -> Delivered | None:
        """The entry whose record had the key properties ``key`` (a log-based delete carries only those)."""
        table = schema.deliveries
        with self._reading() as connection:
            scope_id = self._find_scope(connection, scope) if connection is not None else None
            if connection is None or scope_id is None:
                return None
            row = connection.execute(
                sa.select(table)
                .where(table.c.scope_id == scope_id, table.c.source_key == canonical_json(key))
                .limit(1)
            ).first()
            return self._delivered(row) if row is not None else None

    def remove(self, scope: Scope, identities: t.Iterable[str]) -> int:
        """Forget ``identities`` in ``scope`` after Encharge deleted them (their waiting failures too);
        returns how many deliveries were removed."""
        wanted = sorted(set(identities))
        if not wanted:
            return 0
        scope_id = self._scope_id(scope)
        with self._writing() as connection:
            removed = 0
            for chunk in _chunks(wanted, self._chunk):
                removed += self._delete(connection, schema.deliveries, scope_id, chunk)
                self._delete(connection, schema.failures, scope_id, chunk)
            return removed

    def _delete(
        self, connection: sa.Connection, table: sa.Table, scope_id: int, identities: t.Sequence[str]
    ) -> int:
        result = connection.execute(
            table.delete().where(
                table.c.scope_id == scope_id, self._among(table.c.identity, identities)
            )
        )
        return result.rowcount

    # -- failures ----------------------------------------------------------------------------------------------

    def mark_failed(self, scope: Scope, rows: t.Iterable[Failure]) -> None:
        """Record failures: a new one waits from now; one already waiting takes the new payload and reason and
        counts one more attempt."""
        latest = {row.identity: row for row in rows}
        if not latest:
            return
        scope_id, now = self._scope_id(scope), _stamp()
        params = [
            {
                "scope_id": scope_id,
                "identity": row.identity,
                "payload": encoding.dumps(row.payload).decode(),
                "reason": row.reason.replace("\x00", "\ufffd"),  # (an answer's text: PostgreSQL text holds no NUL)
                "status": row.status,
                "retryable": row.retryable,
                "first_failed_at": now,
                "last_failed_at": now,
                "attempts": 1,
            }
            for row in sorted(latest.values(), key=lambda row: row.identity)
        ]
        with self._writing() as connection:
            for chunk in _chunks(params):
                connection.execute(self._upsert_failure, list(chunk))

    def waiting_failures(
        self,
        account: str,
        *,
        destination: str | None = None,
        stream: str | None = None,
        retryable_only: bool = True,
    ) -> list[WaitingFailure]:
        """Failures waiting in ``account`` (optionally one destination, one stream), oldest first; by default
        only those that sending again can pass."""
        if not self._postgres:
            return self._driver_waiting(account, destination, stream, retryable_only=retryable_only)
        failures, scopes = schema.failures, schema.scopes
        query = (
            sa.select(failures, scopes.c.account, scopes.c.destination, scopes.c.stream)
            .join(scopes, scopes.c.id == failures.c.scope_id)
            .where(*self._matching(account, destination, stream))
            .order_by(failures.c.first_failed_at, failures.c.scope_id, failures.c.identity)
        )
        if retryable_only:
            query = query.where(failures.c.retryable.is_(True))
        with self._reading() as connection:
            if connection is None:
                return []
            return [
                WaitingFailure(
                    identity=row.identity,
                    payload=_payload_decoder.decode(row.payload),
                    reason=row.reason,
                    status=row.status,
                    retryable=row.retryable,
                    scope=Scope(row.account, row.destination, row.stream),
                    first_failed_at=_when(row.first_failed_at),
                    last_failed_at=_when(row.last_failed_at),
                    attempts=row.attempts,
                )
                for row in connection.execute(query)
            ]

    def _driver_waiting(self, account: str, destination: str | None, stream: str | None, *,
                        retryable_only: bool) -> list[WaitingFailure]:
        if not self._present:
            return []
        given = (("s.account", account), ("s.destination", destination), ("s.stream", stream))
        conditions = [f"{column} = ?" for column, value in given if value is not None]
        params = tuple(value for _, value in given if value is not None)
        if retryable_only:
            conditions.append("f.retryable = 1")
        statement = _SQLITE_WAITING.format(conditions=" AND ".join(conditions) or "1 = 1")
        return [
            WaitingFailure(
                identity=identity,
                payload=_payload_decoder.decode(payload),
                reason=reason,
                status=status,
                retryable=bool(retryable),
                scope=Scope(scope_account, scope_destination, scope_stream),
                first_failed_at=_when(first),
                last_failed_at=_when(last),
                attempts=attempts,
            )
            for (identity, payload, reason, status, retryable, scope_account, scope_destination, scope_stream,
                 first, last, attempts) in self._driver_rows(statement, params)
        ]

    def clear_failures(self, scope: Scope, identities: t.Iterable[str]) -> int:
        """Take ``identities`` off the failures waiting in ``scope`` (a newer version arrived, say); returns how
        many were waiting."""
        wanted = sorted(set(identities))
        if not wanted:
            return 0
        scope_id = self._scope_id(scope)
        with self._writing() as connection:
            return sum(self._delete(connection, schema.failures, scope_id, chunk)
                       for chunk in _chunks(wanted, self._chunk))

    # -- accounts ----------------------------------------------------------------------------------------------

    def remember_account(self, key_digest: str, account: str) -> None:
        """The account a key (known by its digest) belongs to, as Encharge said in this run."""
        if not self._postgres:
            with self._driver_writing() as connection:
                connection.execute(_SQLITE_REMEMBER_ACCOUNT, (key_digest, account))
            return
        statement = self._dialect.insert(schema.accounts).values(key_digest=key_digest, account=account)
        with self._writing() as connection:
            connection.execute(statement.on_conflict_do_update(index_elements=["key_digest"],
                                                               set_={"account": account}))

    def account_for(self, key_digest: str) -> str | None:
        """The account a key belonged to in the last real run (None: never used with this ledger)."""
        if not self._present or self._version < ACCOUNTS_SINCE:  # read-only: absent, or an older ledger
            return None
        if not self._postgres:
            rows = self._driver_rows(_SQLITE_ACCOUNT, (key_digest,))
            return rows[0][0] if rows else None
        table = schema.accounts
        with self._reading() as connection:
            if connection is None:
                return None
            return connection.execute(sa.select(table.c.account).where(table.c.key_digest == key_digest)).scalar()

    # -- looking inside ----------------------------------------------------------------------------------------

    @staticmethod
    def _matching(account: str | None, destination: str | None, stream: str | None) -> list[sa.ColumnElement]:
        scopes = schema.scopes
        given = ((scopes.c.account, account), (scopes.c.destination, destination), (scopes.c.stream, stream))
        return [column == value for column, value in given if value is not None]

    def forget(self, *, account: str | None = None, destination: str | None = None, stream: str | None = None) -> int:
        """Remove every entry (deliveries and failures waiting) of the matching scopes: a clean start for them.
        At least one of ``account``, ``destination``, ``stream`` is needed; returns how many entries went."""
        conditions = self._matching(account, destination, stream)
        if not conditions:
            raise self.location.error("forget needs an account, a destination or a stream")
        scope_ids = sa.select(schema.scopes.c.id).where(*conditions).scalar_subquery()
        with self._writing() as connection:
            return sum(
                connection.execute(table.delete().where(table.c.scope_id.in_(scope_ids))).rowcount
                for table in (schema.deliveries, schema.failures)
            )

    def status(self) -> list[StreamStatus]:
        """Per account, destination and stream: records known, last delivery, failures waiting and why."""
        scopes, deliveries, failures = schema.scopes, schema.deliveries, schema.failures
        with self._reading() as connection:
            if connection is None:
                return []
            known = {
                row.scope_id: (row.records, row.last)
                for row in connection.execute(
                    sa.select(
                        deliveries.c.scope_id,
                        sa.func.count().label("records"),
                        sa.func.max(deliveries.c.delivered_at).label("last"),
                    ).group_by(deliveries.c.scope_id)
                )
            }
            waiting: dict[int, dict[str, int]] = {}
            for row in connection.execute(
                sa.select(failures.c.scope_id, failures.c.reason, sa.func.count().label("waiting"))
                .group_by(failures.c.scope_id, failures.c.reason)
                .order_by(sa.func.count().desc(), failures.c.reason)
            ):
                waiting.setdefault(row.scope_id, {})[row.reason] = row.waiting
            rows = connection.execute(
                sa.select(scopes).order_by(scopes.c.account, scopes.c.destination, scopes.c.stream)
            ).all()
        return [
            StreamStatus(
                scope=Scope(row.account, row.destination, row.stream),
                records=known.get(row.id, (0, None))[0],
                last_delivery=_moment(known.get(row.id, (0, None))[1]),
                failures_waiting=sum(waiting.get(row.id, {}).values()),
                reasons=waiting.get(row.id, {}),
            )
            for row in rows
            if row.id in known or row.id in waiting
        ]

    def close(self) -> None:
        """Release every connection; the ledger cannot be used after."""
        self._closed = True
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._write_turn:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def __enter__(self) -> SyncLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
