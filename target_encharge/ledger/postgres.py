"""The sync ledger on a PostgreSQL server, through SQLAlchemy's Core (psycopg 3, else psycopg2).

A list of identities goes as one array parameter, unnested by the server (one statement compiled once whatever
the count); a chunk of deliveries goes as its columns, arrays the server unnests into rows (a tenth of the time
of a statement per row, even pipelined). Writers lock rows in one order, their identities', so two runs writing
the same scope never deadlock.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from typing_extensions import override

from target_encharge.ledger import schema
from target_encharge.ledger.connection import Location
from target_encharge.ledger.lease import Execute, Result
from target_encharge.ledger.names import SCHEMA_VERSION
from target_encharge.ledger.store import (
    DELIVERY_COLUMNS,
    FAILURE_UPDATES,
    DeliveredRow,
    DeliveryRow,
    DeliveryValues,
    FailureRow,
    Scope,
    ScopeRow,
    SyncLedger,
    chunks,
)

CHUNK = 1000  # identities per statement
IDLE_PING = 10.0  # seconds: a kept connection idle longer is pinged before use
READ_AHEAD_LIMIT = 200_000  # a leased scope with at most this many deliveries is read whole at its first lookup
READ_AHEAD_CHUNK = 20_000  # rows per statement of that read

_LISTING = postgresql.ARRAY(sa.Text)


def _listed(identities: t.Sequence[str] | sa.BindParameter) -> sa.TableValuedAlias:
    """``identities`` (or a bind parameter to fill with their list) as a table with one column, ``value``, sent as
    one array parameter, which the server joins by probing its primary key."""
    listing = identities if isinstance(identities, sa.BindParameter) else sa.literal(list(identities), _LISTING)
    return sa.func.unnest(listing).table_valued("value").render_derived()


def _among(column: sa.ColumnElement, identities: t.Sequence[str]) -> sa.ColumnElement:
    return column.in_(sa.select(_listed(identities).c.value))


def _select_known(
    columns: t.Sequence[sa.ColumnElement],
    scope_id: int | sa.BindParameter,
    identities: t.Sequence[str] | sa.BindParameter,
) -> sa.Select:
    """The deliveries of ``identities`` in the scope: a primary-key probe per identity, as a lateral subquery with
    ``LIMIT 1`` (the planner cannot merge it into a join, which it would run by reading the scope's every row into
    a hash: ten times slower for 1,000 identities in 100,000)."""
    table = schema.deliveries
    listed = _listed(identities)
    probe = sa.select(*columns).where(table.c.scope_id == scope_id, table.c.identity == listed.c.value)
    found = probe.limit(sa.literal_column("1")).lateral()  # a literal: the plan is made knowing it
    return sa.select(*(found.c[column.name] for column in columns)).select_from(listed).join(found, sa.true())


def _delivered_columns() -> list[sa.ColumnElement]:
    """What a lookup reads, in the order :data:`~target_encharge.ledger.store.DeliveredRow` has it."""
    table = schema.deliveries
    return [table.c.identity, table.c.fingerprint, table.c.encharge_id, table.c.tags, table.c.delivered_at]


@functools.cache
def _upsert_deliveries() -> sa.Insert:
    """A chunk of deliveries, its columns as arrays (``DELIVERY_COLUMNS``, each a parameter of that name) the
    server unnests into rows; an id or tags given as NULL keep the known ones."""
    table = schema.deliveries
    arrays = [sa.bindparam(name, type_=postgresql.ARRAY(table.c[name].type)) for name in DELIVERY_COLUMNS]
    rows = sa.func.unnest(*arrays).table_valued(*DELIVERY_COLUMNS).render_derived()
    insert = postgresql.insert(table).from_select(list(DELIVERY_COLUMNS), sa.select(*rows.c))
    return insert.on_conflict_do_update(
        index_elements=[table.c.scope_id, table.c.identity],
        set_={
            "fingerprint": insert.excluded.fingerprint,
            "delivered_at": insert.excluded.delivered_at,
            **{name: sa.func.coalesce(insert.excluded[name], table.c[name]) for name in ("encharge_id", "tags")},
        },
    )


@functools.cache
def _fenced_upsert_deliveries() -> sa.Insert:
    """:func:`_upsert_deliveries` in one statement with its fence: nothing is written unless the scope's lease is
    still the writer's (``fence_scope``, ``fence_generation``, ``fence_holder``), its row locked (FOR SHARE) until
    the statement commits; one round trip where a transaction took four."""
    table, leases = schema.deliveries, schema.leases
    arrays = [sa.bindparam(name, type_=postgresql.ARRAY(table.c[name].type)) for name in DELIVERY_COLUMNS]
    rows = sa.func.unnest(*arrays).table_valued(*DELIVERY_COLUMNS).render_derived()
    fence = (
        sa.select(sa.literal(1))
        .where(
            leases.c.scope_id == sa.bindparam("fence_scope"),
            leases.c.generation == sa.bindparam("fence_generation"),
            leases.c.holder == sa.bindparam("fence_holder"),
        )
        .with_for_update(read=True)
    )
    insert = postgresql.insert(table).from_select(list(DELIVERY_COLUMNS), sa.select(*rows.c).where(fence.exists()))
    return insert.on_conflict_do_update(
        index_elements=[table.c.scope_id, table.c.identity],
        set_={
            "fingerprint": insert.excluded.fingerprint,
            "delivered_at": insert.excluded.delivered_at,
            **{name: sa.func.coalesce(insert.excluded[name], table.c[name]) for name in ("encharge_id", "tags")},
        },
    ).returning(sa.literal_column("1"))  # (a row per row written: the driver's rowcount is not told here)


@functools.cache
def _upsert_failures() -> sa.Insert:
    """A failure already waiting takes the new payload and reason, and counts one more attempt."""
    table = schema.failures
    insert = postgresql.insert(table)
    return insert.on_conflict_do_update(
        index_elements=[table.c.scope_id, table.c.identity],
        set_={**{name: insert.excluded[name] for name in FAILURE_UPDATES}, "attempts": table.c.attempts + 1},
    )


@functools.cache
def _select_fingerprints() -> sa.Select:
    """Built once: the skip-unchanged check runs for every batch sent."""
    table = schema.deliveries
    return _select_known(
        [table.c.identity, table.c.fingerprint], sa.bindparam("scope_id"), sa.bindparam("listed", type_=_LISTING)
    )


def _scopes_matching(matching: dict[str, str]) -> list[sa.ColumnElement]:
    return [schema.scopes.c[column] == value for column, value in matching.items()]


@functools.lru_cache(maxsize=32)
def _text(statement: str) -> sa.TextClause:
    return sa.text(statement)


def _executing(connection: sa.Connection) -> Execute:
    """One statement of text (the leases' SQL, lease.py) on ``connection``."""

    def execute(statement: str, params: dict[str, t.Any]) -> Result:
        return connection.execute(_text(statement), params)

    return execute


class PostgresLedger(SyncLedger):
    """The ledger on a PostgreSQL server: SQLAlchemy's engine and its pool of connections."""

    _LEASE_CLOCK = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"
    _LEASE_LOCK = " FOR SHARE"  # a writer's fence holds the lease row until it commits: no take in between

    def __init__(self, location: Location, *, timeout: float, read_only: bool) -> None:
        self._engine: sa.Engine | None = None
        self._engine_lock = threading.Lock()
        # a connection kept for reads (autocommit: one round trip a query) and one for writes (taking turns in
        # ``_write_turn``): a connection from the pool per call cost a ping, a BEGIN and a ROLLBACK besides the
        # query, four round trips where one does (issue 23)
        self._kept: dict[str, tuple[sa.Connection, float]] = {}
        self._read_lock = threading.Lock()
        # Read ahead (issue 23): a scope this run holds the lease of is written by no other run, so its
        # fingerprints and failing identities, read once in chunks and kept up to date by this run's own writes,
        # answer every later lookup without a round trip (a one-call stream asks for one record at a time)
        self._ahead: dict[int, tuple[dict[str, str], set[str]]] = {}
        self._ahead_tried: set[int] = set()
        self._ahead_lock = threading.Lock()
        super().__init__(location, timeout=timeout, read_only=read_only)

    @override
    def _open(self) -> None:
        """The tables created or migrated, one process at a time (schema.stored_version takes a lock)."""
        with self._guard(), self._connection() as connection:
            found = self._found_version(schema.stored_version(connection))
            if not self.read_only and found < SCHEMA_VERSION:
                schema.migrate(connection, found)
            connection.commit()

    @override
    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sa.exc.SQLAlchemyError,)

    @contextlib.contextmanager
    def _connection(self) -> t.Iterator[sa.Connection]:
        with self._engine_lock:
            self._usable()
            if self._engine is None:
                self._engine = self.location.engine(self.timeout)
            engine = self._engine
        with engine.connect() as connection:
            yield connection

    def _keep(self, role: str, **options: t.Any) -> sa.Connection:  # noqa: ANN401
        """The connection kept for ``role`` (under its lock), made anew when there is none or it broke; one idle
        for a while is pinged first (the server may have restarted)."""
        kept = self._kept.get(role)
        if kept is not None:
            connection, last = kept
            if connection.invalidated or connection.closed:
                self._drop(role)
            elif time.monotonic() - last > IDLE_PING:
                try:
                    connection.exec_driver_sql("SELECT 1")
                    connection.rollback()
                except sa.exc.DBAPIError:
                    self._drop(role)
        if role not in self._kept:
            with self._engine_lock:
                self._usable()
                if self._engine is None:
                    self._engine = self.location.engine(self.timeout)
                engine = self._engine
            connection = engine.connect()
            if options:
                connection = connection.execution_options(**options)
            self._kept[role] = (connection, time.monotonic())
        return self._kept[role][0]

    def _drop(self, role: str) -> None:
        kept = self._kept.pop(role, None)
        if kept is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                kept[0].close()

    @contextlib.contextmanager
    def _kept_connection(self, role: str, **options: t.Any) -> t.Iterator[sa.Connection]:  # noqa: ANN401
        connection = self._keep(role, **options)
        try:
            yield connection
        except sa.exc.DBAPIError:
            self._drop(role)  # the next call connects again
            raise
        self._kept[role] = (connection, time.monotonic())

    @contextlib.contextmanager
    def _reading(self) -> t.Iterator[sa.Connection]:
        with self._guard(), self._read_lock, self._kept_connection("read", isolation_level="AUTOCOMMIT") as c:
            yield c

    @contextlib.contextmanager
    def _writing(self) -> t.Iterator[sa.Connection]:
        """One transaction that writes: committed when the block ends, rolled back when it raises."""
        self._writable()
        with self._write_turn, self._guard(), self._kept_connection("write") as connection, connection.begin():
            yield connection

    @override
    @contextlib.contextmanager
    def _leasing(self, *, write: bool) -> t.Iterator[tuple[Execute, dict[str, str]]]:
        if not write:
            with self._reading() as connection:  # (autocommit: one statement)
                yield _executing(connection), self._lease_statements()
            return
        with self._writing() as connection:
            yield _executing(connection), self._lease_statements()

    @override
    def _query(self, statement: str, params: dict[str, t.Any]) -> list[tuple]:
        with self._reading() as connection:
            return [tuple(row) for row in connection.execute(sa.text(statement), params)]

    @override
    def _write(self, steps: t.Sequence[tuple[str, dict[str, t.Any]]], *, fence: int | None) -> list[int]:
        with self._writing() as connection:
            if fence is not None:
                self._fence(_executing(connection), fence)
            return [connection.execute(sa.text(statement), params).rowcount for statement, params in steps]

    @override
    def _close(self) -> None:
        with self._read_lock:
            self._drop("read")
        with self._write_turn:
            self._drop("write")
            self._drop("write-one")
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- scopes ------------------------------------------------------------------------------------------------

    @staticmethod
    def _scope_row(connection: sa.Connection, scope: Scope) -> int | None:
        scopes = schema.scopes
        return connection.execute(
            sa.select(scopes.c.id).where(
                scopes.c.account == scope.account,
                scopes.c.destination == scope.destination,
                scopes.c.stream == scope.stream,
            )
        ).scalar()

    @override
    def _select_scope(self, scope: Scope) -> int | None:
        with self._reading() as connection:
            return self._scope_row(connection, scope)

    @override
    def _insert_scope(self, scope: Scope) -> None:
        with self._writing() as connection:
            if self._scope_row(connection, scope) is None:
                connection.execute(
                    postgresql.insert(schema.scopes)
                    .values(account=scope.account, destination=scope.destination, stream=scope.stream)
                    .on_conflict_do_nothing()
                )

    # -- deliveries and failures -------------------------------------------------------------------------------

    @override
    def _in_write_order(self, rows: t.Iterable[DeliveryRow]) -> t.Iterable[DeliveryRow]:
        return sorted(rows, key=lambda row: row.identity)  # one lock order for every writer

    def _read_ahead(self, scope_id: int) -> tuple[dict[str, str], set[str]] | None:
        """The scope's fingerprints and failing identities, read whole the first time (None: not leased by this
        run, or too large to hold)."""
        with self._ahead_lock:
            if scope_id in self._ahead or scope_id in self._ahead_tried:
                return self._ahead.get(scope_id)
            self._ahead_tried.add(scope_id)
            if self._leases is None or not self._leases.holds(scope_id):
                return None
            deliveries, failures = schema.deliveries, schema.failures
            with self._reading() as connection:
                count = connection.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.select(sa.literal(1))
                        .where(deliveries.c.scope_id == scope_id)
                        .limit(READ_AHEAD_LIMIT + 1)
                        .subquery()
                    )
                ).scalar_one()
                if count > READ_AHEAD_LIMIT:
                    return None
                known: dict[str, str] = {}
                after = ""
                while True:
                    rows = connection.execute(
                        sa.select(deliveries.c.identity, deliveries.c.fingerprint)
                        .where(deliveries.c.scope_id == scope_id, deliveries.c.identity > after)
                        .order_by(deliveries.c.identity)
                        .limit(READ_AHEAD_CHUNK)
                    ).all()
                    known.update((identity, printed) for identity, printed in rows)
                    if len(rows) < READ_AHEAD_CHUNK:
                        break
                    after = rows[-1][0]
                failing = set(
                    connection.execute(sa.select(failures.c.identity).where(failures.c.scope_id == scope_id)).scalars()
                )
            self._ahead[scope_id] = (known, failing)
            return self._ahead[scope_id]

    @override
    def _upsert_deliveries(self, scope_id: int, values: list[DeliveryValues]) -> None:
        ahead = self._ahead.get(scope_id)
        token = self._leases.token(scope_id) if self._leases is not None else None
        if (
            ahead is not None
            and token is not None
            and len(values) <= CHUNK
            and ahead[1].isdisjoint(v[1] for v in values)
        ):
            self._upsert_fenced(scope_id, values, token, ahead)  # the everyday write of a leased scope
            return
        with self._writing() as connection:
            self._fence(_executing(connection), scope_id)
            for chunk in chunks(values, CHUNK):
                columns = dict(
                    zip(DELIVERY_COLUMNS, (list(column) for column in zip(*chunk, strict=True)), strict=True)
                )
                connection.execute(_upsert_deliveries(), columns)
                if ahead is None or not ahead[1].isdisjoint(columns["identity"]):  # (known: none is failing)
                    self._delete_in(connection, schema.failures, scope_id, columns["identity"])
        if ahead is not None:
            with self._ahead_lock:
                ahead[0].update((row[1], row[2]) for row in values)
                ahead[1].difference_update(row[1] for row in values)

    def _upsert_fenced(
        self,
        scope_id: int,
        values: list[DeliveryValues],
        token: tuple[int, str],
        ahead: tuple[dict[str, str], set[str]],
    ) -> None:
        """Deliveries none of which is failing, in one autocommitted statement that checks the lease itself."""
        columns: dict[str, t.Any] = dict(
            zip(DELIVERY_COLUMNS, (list(column) for column in zip(*values, strict=True)), strict=True)
        )
        columns.update(fence_scope=scope_id, fence_generation=token[0], fence_holder=token[1])
        self._writable()
        with (
            self._write_turn,
            self._guard(),
            self._kept_connection("write-one", isolation_level="AUTOCOMMIT") as connection,
        ):
            written = len(connection.execute(_fenced_upsert_deliveries(), columns).all())
        if written == 0 and self._leases is not None:
            self._leases.fenced_out(scope_id)
        with self._ahead_lock:
            ahead[0].update((row[1], row[2]) for row in values)

    @staticmethod
    def _delete_in(connection: sa.Connection, table: sa.Table, scope_id: int, identities: t.Sequence[str]) -> int:
        where = (table.c.scope_id == scope_id, _among(table.c.identity, identities))
        return connection.execute(table.delete().where(*where)).rowcount

    @override
    def _deliveries(self, scope_id: int, identities: t.Sequence[str] | None) -> list[DeliveredRow]:
        columns = _delivered_columns()
        with self._reading() as connection:
            if identities is None:
                everything = sa.select(*columns).where(schema.deliveries.c.scope_id == scope_id)
                return [tuple(row) for row in connection.execute(everything)]
            return [
                tuple(row)
                for chunk in chunks(identities, CHUNK)
                for row in connection.execute(_select_known(columns, scope_id, chunk))
            ]

    @override
    def _fingerprints(self, scope_id: int, identities: t.Sequence[str]) -> dict[str, str]:
        ahead = self._read_ahead(scope_id)
        if ahead is not None:
            with self._ahead_lock:
                return {identity: ahead[0][identity] for identity in identities if identity in ahead[0]}
        found: dict[str, str] = {}
        with self._reading() as connection:
            for chunk in chunks(identities, CHUNK):
                listing = {"scope_id": scope_id, "listed": list(chunk)}
                found.update(connection.execute(_select_fingerprints(), listing).all())
        return found

    @override
    def _delete(self, scope_id: int, identities: t.Sequence[str], *, deliveries: bool) -> int:
        counted, *others = (schema.deliveries, schema.failures) if deliveries else (schema.failures,)
        removed = 0
        with self._writing() as connection:
            self._fence(_executing(connection), scope_id)
            for chunk in chunks(identities, CHUNK):
                removed += self._delete_in(connection, counted, scope_id, chunk)
                for table in others:
                    self._delete_in(connection, table, scope_id, chunk)
        ahead = self._ahead.get(scope_id)
        if ahead is not None:
            with self._ahead_lock:
                ahead[1].difference_update(identities)
                if deliveries:
                    for identity in identities:
                        ahead[0].pop(identity, None)
        return removed

    @override
    def _upsert_failures(self, params: list[dict[str, t.Any]]) -> None:
        with self._writing() as connection:
            for scope_id in sorted({row["scope_id"] for row in params}):
                self._fence(_executing(connection), scope_id)
            for chunk in chunks(params, CHUNK):
                connection.execute(_upsert_failures(), list(chunk))
        with self._ahead_lock:
            for row in params:
                ahead = self._ahead.get(row["scope_id"])
                if ahead is not None:
                    ahead[1].add(row["identity"])

    @override
    def _waiting(self, matching: dict[str, str], *, retryable_only: bool) -> list[FailureRow]:
        failures, scopes = schema.failures, schema.scopes
        query = (
            sa.select(
                failures.c.identity,
                failures.c.payload,
                failures.c.reason,
                failures.c.status,
                failures.c.retryable,
                scopes.c.account,
                scopes.c.destination,
                scopes.c.stream,
                failures.c.first_failed_at,
                failures.c.last_failed_at,
                failures.c.attempts,
            )
            .join(scopes, scopes.c.id == failures.c.scope_id)
            .where(*_scopes_matching(matching))
            .order_by(failures.c.first_failed_at, failures.c.scope_id, failures.c.identity)
        )
        if retryable_only:
            query = query.where(failures.c.retryable.is_(True))
        with self._reading() as connection:
            return [tuple(row) for row in connection.execute(query)]

    # -- accounts, forget, status ------------------------------------------------------------------------------

    @override
    def _write_account(self, key_digest: str, account: str) -> None:
        statement = postgresql.insert(schema.accounts).values(key_digest=key_digest, account=account)
        with self._writing() as connection:
            connection.execute(
                statement.on_conflict_do_update(index_elements=["key_digest"], set_={"account": account})
            )

    @override
    def _read_account(self, key_digest: str) -> str | None:
        table = schema.accounts
        with self._reading() as connection:
            return connection.execute(sa.select(table.c.account).where(table.c.key_digest == key_digest)).scalar()

    @override
    def _write_encharge_ids(self, account: str, object_name: str, ids: dict[str, str]) -> None:
        table = schema.encharge_ids
        rows = [
            {"account": account, "object_name": object_name, "identity": i, "encharge_id": e}
            for i, e in sorted(ids.items())
        ]
        statement = postgresql.insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["account", "object_name", "identity"],
            set_={"encharge_id": statement.excluded.encharge_id},
        )
        with self._writing() as connection:
            for chunk in chunks(rows, CHUNK):
                connection.execute(statement, list(chunk))

    @override
    def _forget_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> None:
        table = schema.encharge_ids
        with self._writing() as connection:
            for chunk in chunks(identities, CHUNK):
                connection.execute(
                    table.delete().where(
                        table.c.account == account, table.c.object_name == object_name, _among(table.c.identity, chunk)
                    )
                )

    @override
    def _read_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> dict[str, str]:
        table = schema.encharge_ids
        found: dict[str, str] = {}
        with self._reading() as connection:
            for chunk in chunks(identities, CHUNK):
                rows = connection.execute(
                    sa.select(table.c.identity, table.c.encharge_id).where(
                        table.c.account == account, table.c.object_name == object_name, _among(table.c.identity, chunk)
                    )
                )
                found.update({identity: encharge_id for identity, encharge_id in rows})
        return found

    @override
    def _forget(self, matching: dict[str, str]) -> int:
        with self._ahead_lock:
            self._ahead.clear()
        scope_ids = sa.select(schema.scopes.c.id).where(*_scopes_matching(matching)).scalar_subquery()
        with self._writing() as connection:
            return sum(
                connection.execute(table.delete().where(table.c.scope_id.in_(scope_ids))).rowcount
                for table in (schema.deliveries, schema.failures)
            )

    @override
    def _status(self) -> tuple[dict[int, tuple[int, str]], dict[int, dict[str, int]], list[ScopeRow]]:
        scopes, deliveries, failures = schema.scopes, schema.deliveries, schema.failures
        with self._reading() as connection:
            known = {
                scope_id: (records, last)
                for scope_id, records, last in connection.execute(
                    sa.select(deliveries.c.scope_id, sa.func.count(), sa.func.max(deliveries.c.delivered_at)).group_by(
                        deliveries.c.scope_id
                    )
                )
            }
            waiting: dict[int, dict[str, int]] = {}
            for scope_id, reason, count in connection.execute(
                sa.select(failures.c.scope_id, failures.c.reason, sa.func.count())
                .group_by(failures.c.scope_id, failures.c.reason)
                .order_by(sa.func.count().desc(), failures.c.reason)
            ):
                waiting.setdefault(scope_id, {})[reason] = count
            rows = connection.execute(
                sa.select(scopes.c.id, scopes.c.account, scopes.c.destination, scopes.c.stream).order_by(
                    scopes.c.account, scopes.c.destination, scopes.c.stream
                )
            ).all()
        return known, waiting, [tuple(row) for row in rows]

    @override
    def _plain(self, statement: str, params: t.Mapping[str, t.Any], *, write: bool) -> list[tuple]:
        with self._writing() if write else self._reading() as connection:
            result = connection.execute(sa.text(statement), dict(params))
            return [tuple(row) for row in result] if result.returns_rows else []
