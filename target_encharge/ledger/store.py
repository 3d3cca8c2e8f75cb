"""The sync ledger's interface: what was delivered, per Encharge account, destination, stream and record identity,
and the failures waiting to be sent again. The logic both stores share is here; each store's queries are in a
module of its own, in its own query language (sqlite.py: the driver's SQL; postgres.py: SQLAlchemy's).

Every method is one transaction and safe to call from several threads; two processes sharing one ledger (other
streams or accounts) never corrupt each other: upserts, SQLite in WAL mode with a busy timeout, writes taking
their lock at the start. Lookups and writes go in chunks. Nothing here says "delivered" unless the caller does,
after Encharge answered 2xx.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime
import threading
import typing as t
from decimal import Decimal

import msgspec

from target_encharge import encoding
from target_encharge.ledger.connection import Location, locate
from target_encharge.ledger.fingerprint import canonical_json
from target_encharge.ledger.lease import Execute, HeldLease, Leases, held, statements
from target_encharge.ledger.names import (
    ACCOUNTS_SINCE,
    DELIVERIES,
    ENCHARGE_IDS_SINCE,
    FAILURES,
    LEASES_SINCE,
    MIRROR_SINCE,
    MIRRORS,
    REMOVALS,
    SCHEMA_VERSION,
    SCOPES,
    SEEN,
    SNAPSHOTS,
)
from target_encharge.settings import DEFAULT_LEDGER_TIMEOUT

_payload_decoder = msgspec.json.Decoder(float_hook=Decimal)  # numbers come back with every digit

# a person delivered in an account: by the template's own identity (a keyed stream's rows) or by the ledger's (an
# unkeyed stream's, the same text), in any of the account's person streams
_PERSON_KNOWN = (
    f"SELECT 1 FROM {DELIVERIES} WHERE scope_id IN (SELECT id FROM {SCOPES} "  # noqa: S608
    "WHERE destination = 'create_or_update_person' AND account = :account) "
    "AND (encharge_id = :person OR identity = :person) LIMIT 1"
)


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
    def tags(self) -> frozenset[str] | None: ...
    @property
    def delivered_at(self) -> datetime.datetime | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """What was last delivered for one identity. Written by the caller after a 2xx; read back by lookups.

    ``tags`` the tags this target added (add_tag, for mirror); ``delivered_at`` is set to now when written as
    None."""

    identity: str
    fingerprint: str
    encharge_id: str | None = None
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


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One version of a mirrored stream's full table, numbered in the ledger's own order; ``completed_by``
    'tap' (its ACTIVATE_VERSION after its records), 'end' (the input ended normally after them), None: open."""

    id: int
    completed_by: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """An identity mirror may remove: what a removal names (``encharge_id``), why, and what holds it still.

    ``planned``: its removal is durable in the ledger (a `_sdc_deleted_at`, or one sent that failed and can pass);
    ``attempts``: how many times it was sent; ``held``: another row of the destination still has the person."""

    identity: str
    encharge_id: str | None
    reason: str
    planned: bool = False
    attempts: int = 0
    held: bool = False


MIRROR_CHUNK = 100  # identities per statement of the mirror queries (SQLite's 999 parameters before 3.32)


def _named(prefix: str, values: t.Sequence[t.Any]) -> tuple[str, dict[str, t.Any]]:
    """``values`` as bound parameters ``:prefix0, :prefix1, ...`` (the text of an ``IN (...)``) and their values."""
    params = {f"{prefix}{n}": value for n, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


# The mirror's queries (issue 22): plain SQL both stores run as it is (named parameters, ON CONFLICT).
_SNAPSHOT = f"SELECT id, completed_by FROM {SNAPSHOTS} WHERE scope_id = :scope_id AND tap_version = :version"  # noqa: S608
_NEW_SNAPSHOT = (
    f"INSERT INTO {SNAPSHOTS} (scope_id, tap_version, opened_at) VALUES (:scope_id, :version, :now) "  # noqa: S608
    "ON CONFLICT (scope_id, tap_version) DO NOTHING"
)
_COMPLETE = f"UPDATE {SNAPSHOTS} SET completed_at = :now, completed_by = :by WHERE id = :id"  # noqa: S608
_REOPEN = f"UPDATE {SNAPSHOTS} SET completed_at = NULL, completed_by = NULL WHERE id = :id"  # noqa: S608
_COMPLETED = (
    f"SELECT id, completed_by FROM {SNAPSHOTS} WHERE scope_id = :scope_id AND completed_by IS NOT NULL "  # noqa: S608
    "ORDER BY id"
)
_MIRROR = f"SELECT key_properties, closing_seen FROM {MIRRORS} WHERE scope_id = :scope_id"  # noqa: S608
_SET_MIRROR = (
    f"INSERT INTO {MIRRORS} (scope_id, key_properties, closing_seen) VALUES (:scope_id, :keys, :closing) "  # noqa: S608
    "ON CONFLICT (scope_id) DO UPDATE SET key_properties = excluded.key_properties, "
    f"closing_seen = (excluded.closing_seen OR {MIRRORS}.closing_seen)"
)
_KNOWN = f"SELECT count(*) FROM {DELIVERIES} WHERE scope_id = :scope_id AND fingerprint <> ''"  # noqa: S608
_MISSING = (  # what this target wrote and was last seen no later than a snapshot (never seen: 0)
    f"SELECT d.identity, d.encharge_id FROM {DELIVERIES} d LEFT JOIN {SEEN} s "  # noqa: S608
    "ON s.scope_id = d.scope_id AND s.identity = d.identity "
    "WHERE d.scope_id = :scope_id AND d.fingerprint <> '' AND coalesce(s.snapshot_id, 0) <= :upto "
    "AND coalesce(s.snapshot_id, 0) > :after ORDER BY d.identity"
)
_PLANNED = (
    f"SELECT r.identity, d.encharge_id, r.reason, r.attempts FROM {REMOVALS} r JOIN {DELIVERIES} d "  # noqa: S608
    "ON d.scope_id = r.scope_id AND d.identity = r.identity WHERE r.scope_id = :scope_id ORDER BY r.identity"
)
_UNDER = (  # add_tag: the rows this target wrote of one person's (or key's) single tags
    f"SELECT identity FROM {DELIVERIES} WHERE scope_id = :scope_id AND fingerprint <> '' "  # noqa: S608
    "AND substr(identity, 1, :length) = :prefix ORDER BY identity"
)
_ANY_PLANNED = f"SELECT count(*) FROM {REMOVALS} WHERE scope_id = :scope_id"  # noqa: S608
_HOLDERS = (  # every row of the account and destination that names one of the persons or objects (one another
    # stream only found there, `create`, holds it too: its source has it)
    f"SELECT d.scope_id, d.identity, d.encharge_id FROM {DELIVERIES} d JOIN {SCOPES} sc ON sc.id = d.scope_id "  # noqa: S608
    "WHERE sc.account = :account AND sc.destination = :destination AND d.encharge_id IN ({among})"
)
_REMOVAL_FAILURES = (
    f"SELECT scope_id, failure, count(*) FROM {REMOVALS} WHERE failure IS NOT NULL "  # noqa: S608
    "GROUP BY scope_id, failure"
)
_PLAN = (
    f"INSERT INTO {REMOVALS} (scope_id, identity, reason, planned_at, attempts) "  # noqa: S608
    "VALUES (:scope_id, :identity, :reason, :now, 0) ON CONFLICT (scope_id, identity) DO NOTHING"
)
_REMOVAL_FAILED = (
    f"UPDATE {REMOVALS} SET failure = :failure, attempts = attempts + 1 "  # noqa: S608
    "WHERE scope_id = :scope_id AND identity = :identity"
)


# What the stores hand back, as plain tuples (their columns in this order):
DeliveryValues = tuple[int, str, str, str, str | None, str | None]  # written: DELIVERY_COLUMNS
DeliveredRow = tuple[str, str, str | None, str | None, str]  # read: identity, fingerprint, encharge_id, tags, at
FailureRow = tuple[str, str, str, int | None, t.Any, str, str, str, str, str, int]
# ... read: identity, payload, reason, status, retryable, account, destination, stream, first, last, attempts
ScopeRow = tuple[int, str, str, str]  # id, account, destination, stream

DELIVERY_COLUMNS = ("scope_id", "identity", "fingerprint", "delivered_at", "encharge_id", "tags")
FAILURE_COLUMNS = (
    "scope_id",
    "identity",
    "payload",
    "reason",
    "status",
    "retryable",
    "first_failed_at",
    "last_failed_at",
    "attempts",
)
FAILURE_UPDATES = ("payload", "reason", "status", "retryable", "last_failed_at")  # and one more attempt


def stamp(moment: datetime.datetime | None = None) -> str:
    """``moment`` (default: now) as the ledger stores it: ISO 8601 in UTC, microseconds, one fixed width."""
    moment = datetime.datetime.now(datetime.timezone.utc) if moment is None else moment
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _moment(stamp: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(stamp) if stamp is not None else None


def _when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp)


def _stored(text: str) -> str:
    """A scope's name as the ledger keeps it: PostgreSQL's text holds no NUL (a stream named with one would stop
    every run), so a NUL is kept as U+FFFD on both stores."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _stored_scope(scope: Scope) -> Scope:
    return Scope(_stored(scope.account), _stored(scope.destination), _stored(scope.stream))


def chunks(items: t.Sequence, size: int) -> t.Iterator[t.Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SyncLedger(abc.ABC):
    """The sync ledger at ``ledger_url`` (see :func:`target_encharge.ledger.connection.locate`), opened by
    :meth:`open`, which picks its store from the URL.

    Opening creates or migrates its tables, and proves it can write (a locked file fails here, before anything
    is sent); ``read_only`` opens without writing anything, creating nothing (an absent ledger reads as empty).
    Every failure to use it raises :class:`~target_encharge.ledger.connection.LedgerError`, one line naming
    ``ledger_url`` with its password masked.

    A store implements the hooks (the abstract methods below): each a query or a write in its own language."""

    @staticmethod
    def open(
        ledger_url: str | None = None, *, timeout: float = DEFAULT_LEDGER_TIMEOUT, read_only: bool = False
    ) -> SyncLedger:
        """The ledger at ``ledger_url``, in the store its URL names (a file: SQLite; a server: PostgreSQL)."""
        location = locate(ledger_url)
        if location.is_sqlite:
            from target_encharge.ledger.sqlite import SQLiteLedger

            return SQLiteLedger(location, timeout=timeout, read_only=read_only)
        from target_encharge.ledger.postgres import PostgresLedger

        return PostgresLedger(location, timeout=timeout, read_only=read_only)

    def __init__(self, location: Location, *, timeout: float, read_only: bool) -> None:
        self.location = location
        self.timeout = timeout
        self.read_only = read_only
        self._scope_ids: dict[Scope, int] = {}
        # this process's writers take turns here: SQLite's busy handler would make them sleep (up to 100 ms a
        # try) for each other's locks; other processes still wait on the file's lock (the busy timeout)
        self._write_turn = threading.RLock()
        self._present = True  # False: opened read-only, and there is no ledger there yet
        self._version = SCHEMA_VERSION  # the schema version of the tables (older only when opened read-only)
        self._closed = False
        self._leases: Leases | None = None  # the scopes this run holds (take_lease), and their renewal
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- the hooks a store implements --------------------------------------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Read the schema version (:meth:`_found_version`); create or migrate the tables unless read-only."""

    @abc.abstractmethod
    def _errors(self) -> tuple[type[BaseException], ...]:
        """The store's database errors, which :meth:`_guard` turns into the user's one line."""

    @abc.abstractmethod
    def _select_scope(self, scope: Scope) -> int | None: ...

    @abc.abstractmethod
    def _insert_scope(self, scope: Scope) -> None:
        """A row for ``scope`` unless it has one (another process may be adding it at the same moment)."""

    @abc.abstractmethod
    def _upsert_deliveries(self, scope_id: int, values: list[DeliveryValues]) -> None:
        """Write ``values`` (each replaces the fingerprint and time; an id or tags given as None keep the known
        ones) and take their identities off the failures waiting, in one transaction."""

    @abc.abstractmethod
    def _deliveries(self, scope_id: int, identities: t.Sequence[str] | None) -> t.Iterable[DeliveredRow]:
        """The deliveries of ``identities`` in the scope (None: all of them)."""

    @abc.abstractmethod
    def _fingerprints(self, scope_id: int, identities: t.Sequence[str]) -> dict[str, str]: ...

    @abc.abstractmethod
    def _delete(self, scope_id: int, identities: t.Sequence[str], *, deliveries: bool) -> int:
        """Delete the failures waiting of ``identities`` and (``deliveries``) their deliveries, in one
        transaction; returns how many deliveries (else failures) went."""

    @abc.abstractmethod
    def _upsert_failures(self, params: list[dict[str, t.Any]]) -> None:
        """Write failures (:data:`FAILURE_COLUMNS`); one already waiting takes :data:`FAILURE_UPDATES` and counts
        one more attempt."""

    @abc.abstractmethod
    def _waiting(self, matching: dict[str, str], *, retryable_only: bool) -> t.Iterable[FailureRow]:
        """The failures waiting in the scopes whose columns have the values ``matching``, oldest first (then by
        scope and identity)."""

    @abc.abstractmethod
    def _write_account(self, key_digest: str, account: str) -> None: ...

    @abc.abstractmethod
    def _read_account(self, key_digest: str) -> str | None: ...

    @abc.abstractmethod
    def _forget(self, matching: dict[str, str]) -> int: ...

    @abc.abstractmethod
    def _write_encharge_ids(self, account: str, object_name: str, ids: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def _forget_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> None: ...

    @abc.abstractmethod
    def _read_encharge_ids(self, account: str, object_name: str, identities: t.Sequence[str]) -> dict[str, str]: ...

    @abc.abstractmethod
    def _status(self) -> tuple[dict[int, tuple[int, str]], dict[int, dict[str, int]], list[ScopeRow]]:
        """Deliveries (count, last) per scope id; failures waiting per scope id and reason, most frequent first;
        every scope, in order; all read in one transaction."""

    # the leases' SQL (lease.py): the store's "now" in seconds since the epoch, by the database's clock, and how a
    # write transaction keeps the lease row it read unchanged until it ends
    _LEASE_CLOCK: t.ClassVar[str]
    _LEASE_LOCK: t.ClassVar[str] = ""

    @abc.abstractmethod
    def _leasing(self, *, write: bool) -> t.ContextManager[tuple[Execute, dict[str, str]]]:
        """One transaction for the leases: a function running one statement in it, and the lease statements."""

    @abc.abstractmethod
    def _plain(self, statement: str, params: t.Mapping[str, t.Any], *, write: bool) -> list[tuple]:
        """One statement in the SQL both stores speak, with ``:name`` parameters, in a transaction of its own
        (``write``: one that writes); its rows. The run history's queries (runs.py) go through it."""

    @abc.abstractmethod
    def _query(self, statement: str, params: dict[str, t.Any]) -> list[tuple]:
        """The rows of one statement of plain SQL with named parameters (the mirror's queries)."""

    @abc.abstractmethod
    def _write(self, steps: t.Sequence[tuple[str, dict[str, t.Any]]], *, fence: int | None) -> list[int]:
        """Run ``steps`` (plain SQL, named parameters) in one transaction that writes; each one's row count.
        ``fence``: the scope whose lease the transaction checks first (see :meth:`_fence`)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the store's connections."""

    # -- shared plumbing ---------------------------------------------------------------------------------------

    def _found_version(self, stored: int | str) -> int:
        """``stored``, the version the tables have (as stored), refused when it is not a number or newer than this
        target knows; read-only, it says whether there is a ledger at all."""
        text = str(stored).strip()
        if not text.isdigit():
            raise self.location.error(
                f"its schema_version is {text[:40]!r}, not a number: a damaged ledger; move it aside to start a "
                "new one, or restore a copy"
            )
        found = int(text)
        if found > SCHEMA_VERSION:
            raise self.location.error(
                f"written by a newer target-encharge (ledger schema version {found}, this one knows up to "
                f"{SCHEMA_VERSION}); upgrade target-encharge"
            )
        if self.read_only:
            self._present, self._version = found > 0, found
        return found

    @contextlib.contextmanager
    def _guard(self) -> t.Iterator[None]:
        """Database errors become the user's one line (never their raw text with a password)."""
        try:
            yield
        except self._errors() as exc:
            raise self.location.explain(exc, self.timeout) from None

    def _lease_error(self, what: str) -> str:
        """The one line of a lease's error: ``what``, naming the ledger (password masked)."""
        return str(self.location.error(what))

    def _lease_statements(self) -> dict[str, str]:
        return statements(self._LEASE_CLOCK, self._LEASE_LOCK)

    def _fence(self, execute: Execute, scope_id: int) -> None:
        """Inside a write transaction in the scope ``scope_id``: nothing is written unless this run still holds
        the scope's lease at its generation (when it took one: dry runs and the commands take none)."""
        if self._leases is not None:
            self._leases.fence(execute, self._lease_statements(), scope_id)

    def _check_lease(self, scope: Scope) -> None:
        if self._leases is not None:
            self._leases.ensure_held(self._scope_ids.get(scope))

    def _usable(self) -> None:
        if self._closed or not self._present:
            raise self.location.error("the ledger is closed" if self._present else "the ledger does not exist")

    def _writable(self) -> None:
        if self.read_only:
            raise self.location.error("opened read-only: nothing may be written")

    def _find_scope(self, scope: Scope) -> int | None:
        """The id of ``scope`` if it has a row (None: nothing was written in it yet, or a read-only ledger that
        does not exist)."""
        if scope not in self._scope_ids and self._present:
            found = self._select_scope(_stored_scope(scope))
            if found is not None:
                self._scope_ids[scope] = found
        return self._scope_ids.get(scope)

    def _scope_id(self, scope: Scope) -> int:
        """The id of ``scope``, its row created (in a transaction of its own) the first time it is written."""
        if scope in self._scope_ids:
            return self._scope_ids[scope]
        self._writable()
        self._insert_scope(_stored_scope(scope))
        found = self._find_scope(scope)
        if found is None:  # inserted just above, or by another process: never gone, forget keeps scopes
            raise self.location.error(f"the stream {scope.stream!r} could not be recorded; run again")
        return found

    @staticmethod
    def _matching(account: str | None, destination: str | None, stream: str | None) -> dict[str, str]:
        """The scope columns given a value (None: any)."""
        given = {"account": account, "destination": destination, "stream": stream}
        return {column: _stored(value) for column, value in given.items() if value is not None}

    @staticmethod
    def _delivered(row: DeliveredRow) -> Delivered:
        identity, fingerprint, encharge_id, tags, delivered_at = row
        return Delivered(
            identity=identity,
            fingerprint=fingerprint,
            encharge_id=encharge_id,
            tags=frozenset(msgspec.json.decode(tags)) if tags is not None else None,
            delivered_at=_moment(delivered_at),
        )

    # -- deliveries --------------------------------------------------------------------------------------------

    def _in_write_order(self, rows: t.Iterable[DeliveryRow]) -> t.Iterable[DeliveryRow]:
        """The order a store writes rows in (a server: one lock order for every writer, see postgres.py)."""
        return rows

    def mark_delivered(self, scope: Scope, rows: t.Iterable[DeliveryRow]) -> None:
        """Record that Encharge accepted ``rows`` (call only after a 2xx): each replaces what its identity held
        (an id or tags given as None keep the ones known) and leaves the failures waiting."""
        latest = {row.identity: row for row in rows}  # one write per identity: the last one given
        if not latest:
            return
        scope_id, now = self._scope_id(scope), stamp()
        values = [  # in the order of DELIVERY_COLUMNS
            (
                scope_id,
                row.identity,
                row.fingerprint,
                stamp(row.delivered_at) if row.delivered_at else now,
                row.encharge_id,
                canonical_json(sorted(row.tags)) if row.tags is not None else None,
            )
            for row in self._in_write_order(latest.values())
        ]
        self._upsert_deliveries(scope_id, values)

    def lookup(self, scope: Scope, identities: t.Iterable[str]) -> dict[str, Delivered]:
        """What was last delivered for each of ``identities`` that the ledger knows in ``scope``."""
        wanted = list(dict.fromkeys(identities))
        self._check_lease(scope)
        scope_id = self._find_scope(scope) if wanted else None
        if scope_id is None:
            return {}
        return {row[0]: self._delivered(row) for row in self._deliveries(scope_id, wanted)}

    def fingerprints(self, scope: Scope, identities: t.Iterable[str]) -> dict[str, str]:
        """The fingerprint last delivered for each of ``identities`` the ledger knows in ``scope``: the
        skip-unchanged check of every batch, lighter than :meth:`lookup`."""
        self._check_lease(scope)
        scope_id = self._find_scope(scope)
        if scope_id is None:
            return {}
        wanted = list(dict.fromkeys(identities))
        return self._fingerprints(scope_id, wanted) if wanted else {}

    def known(self, scope: Scope) -> dict[str, Delivered]:
        """Everything delivered in ``scope`` (for mirror: what the target wrote and may remove)."""
        self._check_lease(scope)
        scope_id = self._find_scope(scope)
        if scope_id is None:
            return {}
        return {row[0]: self._delivered(row) for row in self._deliveries(scope_id, None)}

    def remove(self, scope: Scope, identities: t.Iterable[str]) -> int:
        """Forget ``identities`` in ``scope`` after Encharge deleted them (their waiting failures too);
        returns how many deliveries were removed."""
        wanted = sorted(set(identities))
        if not wanted:
            return 0
        return self._delete(self._scope_id(scope), wanted, deliveries=True)

    # -- mirror: snapshots, seen stamps, planned removals (issue 22) ---------------------------------------------

    def snapshot(self, scope: Scope, version: str) -> Snapshot:
        """The snapshot of ``version`` of the stream's full table: found again when the same version comes back
        (a resumed table, a second SCHEMA, a rerun in the same second), else opened now."""
        scope_id = self._scope_id(scope)
        params = {"scope_id": scope_id, "version": version}
        found = self._query(_SNAPSHOT, params)
        if not found:
            self._write([(_NEW_SNAPSHOT, {**params, "now": stamp()})], fence=scope_id)
            found = self._query(_SNAPSHOT, params)
        ((snapshot_id, completed_by),) = found
        return Snapshot(snapshot_id, completed_by)

    def reopen_snapshot(self, scope: Scope, snapshot_id: int) -> None:
        """Records of a completed snapshot came again: it is open until it completes again."""
        self._write([(_REOPEN, {"id": snapshot_id})], fence=self._scope_id(scope))

    def complete_snapshot(self, scope: Scope, snapshot_id: int, by: str) -> None:
        """The snapshot is complete: ``by`` 'tap' (its ACTIVATE_VERSION after its records; the scope's tap then
        says from now on when a version ends) or 'end' (the input ended normally)."""
        steps = [(_COMPLETE, {"id": snapshot_id, "by": by, "now": stamp()})]
        scope_id = self._scope_id(scope)
        if by == "tap":
            keys, _closing = self.mirror_of(scope) or (None, False)
            steps.append((_SET_MIRROR, {"scope_id": scope_id, "keys": keys, "closing": True}))
        self._write(steps, fence=scope_id)

    def completed_snapshots(self, scope: Scope) -> list[Snapshot]:
        """The scope's complete snapshots, in the order they were opened."""
        scope_id = self._find_scope(scope)
        if scope_id is None or self._version < MIRROR_SINCE:  # (read-only: a ledger older than its tables)
            return []
        return [Snapshot(i, by) for i, by in self._query(_COMPLETED, {"scope_id": scope_id})]

    def mirror_of(self, scope: Scope) -> tuple[str | None, bool] | None:
        """The key properties last seen for the mirrored scope (canonical JSON) and whether its tap closes its
        versions with an ACTIVATE_VERSION; None: never mirrored."""
        scope_id = self._find_scope(scope)
        if scope_id is None or self._version < MIRROR_SINCE:
            return None
        rows = self._query(_MIRROR, {"scope_id": scope_id})
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def remember_mirror(self, scope: Scope, key_properties: t.Sequence[str]) -> None:
        """The key properties the mirrored stream has in this run."""
        keys = canonical_json(list(key_properties))
        scope_id = self._scope_id(scope)
        self._write([(_SET_MIRROR, {"scope_id": scope_id, "keys": keys, "closing": False})], fence=scope_id)

    def stamp_seen(self, scope: Scope, snapshot_id: int, identities: t.Iterable[str], *, clear: bool) -> None:
        """``identities`` came in the snapshot (each its last stamp); ``clear``: their planned removals go (the
        last word about an identity wins), and a removal that was sent has its delivery sent again."""
        wanted = sorted(set(identities))
        if not wanted:
            return
        scope_id = self._scope_id(scope)
        steps = []
        for chunk in chunks(wanted, MIRROR_CHUNK):
            rows = ", ".join(f"(:scope_id, :i{n}, :snapshot)" for n in range(len(chunk)))
            among, params = _named("i", chunk)
            params.update(scope_id=scope_id, snapshot=snapshot_id)
            steps.append(
                (
                    f"INSERT INTO {SEEN} (scope_id, identity, snapshot_id) VALUES {rows} "  # noqa: S608
                    "ON CONFLICT (scope_id, identity) DO UPDATE SET snapshot_id = excluded.snapshot_id",
                    params,
                )
            )
            if clear:
                steps.extend(self._clear_steps(among, params))
        self._write(steps, fence=scope_id)

    @staticmethod
    def _clear_steps(among: str, params: dict[str, t.Any]) -> list[tuple[str, dict[str, t.Any]]]:
        """Planned removals of ``among`` go; where one was already sent (it may have been applied), the delivery's
        fingerprint is forgotten so the record is sent again, never skipped as unchanged."""
        sent = (
            f"SELECT identity FROM {REMOVALS} WHERE scope_id = :scope_id AND attempts > 0 "  # noqa: S608
            f"AND identity IN ({among})"
        )
        return [
            (
                f"UPDATE {DELIVERIES} SET fingerprint = 'removal sent' "  # noqa: S608
                f"WHERE scope_id = :scope_id AND identity IN ({sent})",
                params,
            ),
            (f"DELETE FROM {REMOVALS} WHERE scope_id = :scope_id AND identity IN ({among})", params),  # noqa: S608
        ]

    def clear_removals(self, scope: Scope, identities: t.Iterable[str]) -> None:
        """A later record of these identities came: their planned removals go (the last word wins)."""
        scope_id = self._find_scope(scope)
        wanted = sorted(set(identities))
        if scope_id is None or not wanted:
            return
        steps = []
        for chunk in chunks(wanted, MIRROR_CHUNK):
            among, params = _named("i", chunk)
            steps.extend(self._clear_steps(among, {**params, "scope_id": scope_id}))
        self._write(steps, fence=scope_id)

    def plan_removals(self, scope: Scope, planned: t.Iterable[tuple[str, str]]) -> None:
        """Removals decided, durable from now (``(identity, why)``); one already planned stays as it is."""
        scope_id, now = self._scope_id(scope), stamp()
        steps = [(_PLAN, {"scope_id": scope_id, "identity": i, "reason": why, "now": now}) for i, why in planned]
        self._write(steps, fence=scope_id)

    def has_planned(self, scope: Scope) -> bool:
        scope_id = self._find_scope(scope)
        if scope_id is None or self._version < MIRROR_SINCE:
            return False
        return bool(self._query(_ANY_PLANNED, {"scope_id": scope_id})[0][0])

    def known_count(self, scope: Scope) -> int:
        """How many rows this target wrote in ``scope`` (not those it only found there): the guard's whole."""
        scope_id = self._find_scope(scope)
        return self._query(_KNOWN, {"scope_id": scope_id})[0][0] if scope_id is not None else 0

    def missing(self, scope: Scope, upto: int, after: int = -1) -> list[tuple[str, str | None]]:
        """What this target wrote in ``scope`` last seen in a snapshot numbered ``after`` < s <= ``upto`` (never
        seen: 0), as (identity, encharge_id)."""
        scope_id = self._find_scope(scope)
        if scope_id is None:
            return []
        return [tuple(row) for row in self._query(_MISSING, {"scope_id": scope_id, "upto": upto, "after": after})]

    def identities_under(self, scope: Scope, prefix: str) -> list[str]:
        """The identities this target wrote in ``scope`` that start with ``prefix`` (add_tag: a person's tags)."""
        scope_id = self._find_scope(scope)
        if scope_id is None:
            return []
        params = {"scope_id": scope_id, "length": len(prefix), "prefix": prefix}
        return [row[0] for row in self._query(_UNDER, params)]

    def planned_removals(self, scope: Scope) -> list[Candidate]:
        """The removals planned in ``scope`` (of rows this target still knows)."""
        scope_id = self._find_scope(scope)
        if scope_id is None or self._version < MIRROR_SINCE:
            return []
        return [
            Candidate(identity, encharge_id, reason, planned=True, attempts=attempts)
            for identity, encharge_id, reason, attempts in self._query(_PLANNED, {"scope_id": scope_id})
        ]

    def holders(self, scope: Scope, encharge_ids: t.Iterable[str]) -> dict[str, set[tuple[int, str]]]:
        """Per template identity, every (scope id, identity) of the account and destination that holds it."""
        held: dict[str, set[tuple[int, str]]] = {}
        for chunk in chunks(sorted(set(encharge_ids)), MIRROR_CHUNK):
            among, params = _named("e", chunk)
            params.update(account=scope.account, destination=scope.destination)
            for scope_id, identity, encharge_id in self._query(_HOLDERS.format(among=among), params):
                held.setdefault(encharge_id, set()).add((scope_id, identity))
        return held

    def scope_id(self, scope: Scope) -> int | None:
        """The ledger's id of ``scope`` (None: nothing written in it yet)."""
        return self._find_scope(scope)

    def settle_removals(self, scope: Scope, identities: t.Iterable[str], *, planned_only: bool = True) -> int:
        """Encharge removed these (2xx, or 404: already gone), or they are released (held elsewhere): their rows
        go, only where the removal is still planned (``planned_only``: a re-insert since wins); returns how many."""
        wanted = sorted(set(identities))
        scope_id = self._find_scope(scope)
        if scope_id is None or not wanted:
            return 0
        removed = 0
        for chunk in chunks(wanted, MIRROR_CHUNK):
            among, params = _named("i", chunk)
            params["scope_id"] = scope_id
            still = (
                f" AND identity IN (SELECT identity FROM {REMOVALS} WHERE scope_id = :scope_id)"  # noqa: S608
                if planned_only
                else ""
            )
            steps = [
                (f"DELETE FROM {table} WHERE scope_id = :scope_id AND identity IN ({among}){still}", params)  # noqa: S608
                for table in (DELIVERIES, SEEN, FAILURES)
            ]
            steps.append((f"DELETE FROM {REMOVALS} WHERE scope_id = :scope_id AND identity IN ({among})", params))  # noqa: S608
            removed += self._write(steps, fence=scope_id)[0]
        return removed

    def gave_up_removals(self, scope: Scope, identities: t.Iterable[str]) -> None:
        """Removals that failed for good: no longer planned (the row stays; a snapshot may name it again)."""
        self.clear_removals(scope, identities)

    def removal_failed(self, scope: Scope, identity: str, failure: str) -> None:
        """A removal sent failed for a reason that can pass: it stays planned, its failure shown by `status`."""
        scope_id = self._scope_id(scope)
        failed = {"scope_id": scope_id, "identity": identity, "failure": failure[:500]}
        self._write([(_REMOVAL_FAILED, failed)], fence=scope_id)

    # -- failures ----------------------------------------------------------------------------------------------

    def mark_failed(self, scope: Scope, rows: t.Iterable[Failure]) -> None:
        """Record failures: a new one waits from now; one already waiting takes the new payload and reason and
        counts one more attempt."""
        latest = {row.identity: row for row in rows}
        if not latest:
            return
        scope_id, now = self._scope_id(scope), stamp()
        self._upsert_failures(
            [
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
        )

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
        if not self._present:
            return []
        rows = self._waiting(self._matching(account, destination, stream), retryable_only=retryable_only)
        try:
            return self._waiting_failures(rows)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            raise self.location.error(
                f"a failure waiting in the ledger is damaged ({exc}); "
                f"`target-encharge-ledger forget --stream NAME` clears the stream's entries, or restore a copy"
            ) from None

    def _waiting_failures(self, rows: t.Iterable[FailureRow]) -> list[WaitingFailure]:
        failures = []
        for row in rows:
            try:
                failures.append(self._waiting_failure(row))
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                what = "payload is not JSON" if isinstance(exc, msgspec.DecodeError) else "time is not ISO 8601"
                raise ValueError(f"in stream {row[7]!r}, its {what}") from None
        return failures

    @staticmethod
    def _waiting_failure(row: FailureRow) -> WaitingFailure:
        (
            identity,
            payload,
            reason,
            status,
            retryable,
            scope_account,
            scope_destination,
            scope_stream,
            first,
            last,
            attempts,
        ) = row
        return WaitingFailure(
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

    def clear_failures(self, scope: Scope, identities: t.Iterable[str]) -> int:
        """Take ``identities`` off the failures waiting in ``scope`` (a newer version arrived, say); returns how
        many were waiting."""
        wanted = sorted(set(identities))
        if not wanted:
            return 0
        return self._delete(self._scope_id(scope), wanted, deliveries=False)

    # -- accounts ----------------------------------------------------------------------------------------------

    def remember_account(self, key_digest: str, account: str) -> None:
        """The account a key (known by its digest) belongs to, as Encharge said in this run."""
        self._writable()
        self._write_account(key_digest, account)

    def knows_person(self, account: str, person: str) -> bool:
        """Whether ``person`` (the template's own identity: ``email:...``, ``userId:...``, ``id:...``) was delivered
        in ``account`` by any of its person streams: one indexed probe, nothing held in memory (a run's deliveries
        are here as soon as Encharge answered them)."""
        if not self._present:
            return False
        return bool(self._plain(_PERSON_KNOWN, {"account": account, "person": person}, write=False))

    def account_for(self, key_digest: str) -> str | None:
        """The account a key belonged to in the last real run (None: never used with this ledger)."""
        if not self._present or self._version < ACCOUNTS_SINCE:  # read-only: absent, or an older ledger
            return None
        return self._read_account(key_digest)

    # -- Encharge ids (issue 24) ------------------------------------------------------------------------------

    def remember_encharge_ids(self, account: str, object_name: str, ids: t.Mapping[str, str]) -> None:
        """Encharge's ids for people or objects of ``object_name`` (identity -> id), as it answered them."""
        if ids:
            self._writable()
            self._write_encharge_ids(account, object_name, dict(ids))

    def forget_encharge_ids(self, account: str, object_name: str, identities: t.Iterable[str]) -> None:
        """Ids Encharge no longer knows (a 404 named them): asked for again when next needed."""
        wanted = sorted(set(identities))
        if wanted:
            self._writable()
            self._forget_encharge_ids(account, object_name, wanted)

    def encharge_ids(self, account: str, object_name: str, identities: t.Iterable[str]) -> dict[str, str]:
        """The Encharge ids known for ``identities`` (identity -> id; the unknown ones left out)."""
        wanted = sorted(set(identities))
        if not wanted or not self._present or self._version < ENCHARGE_IDS_SINCE:  # read-only: absent or older
            return {}
        return self._read_encharge_ids(account, object_name, wanted)

    # -- looking inside ----------------------------------------------------------------------------------------

    def forget(self, *, account: str | None = None, destination: str | None = None, stream: str | None = None) -> int:
        """Remove every entry (deliveries and failures waiting) of the matching scopes: a clean start for them.
        At least one of ``account``, ``destination``, ``stream`` is needed; returns how many entries went."""
        matching = self._matching(account, destination, stream)
        if not matching:
            raise self.location.error("forget needs an account, a destination or a stream")
        self._writable()
        return self._forget(matching)

    def status(self) -> list[StreamStatus]:
        """Per account, destination and stream: records known, last delivery, failures waiting and why."""
        if not self._present:
            return []
        known, waiting, scopes = self._status()
        if self._version >= MIRROR_SINCE:  # removals that failed and can pass wait too (issue 22)
            for scope_id, failure, count in self._query(_REMOVAL_FAILURES, {}):
                reasons = waiting.setdefault(scope_id, {})
                reasons[f"removal: {failure}"] = count
        try:
            return self._statuses(known, waiting, scopes)
        except (ValueError, TypeError) as exc:
            raise self.location.error(
                f"a delivery's time is damaged ({type(exc).__name__}: not ISO 8601); restore a copy, or "
                "`target-encharge-ledger forget --stream NAME` to clear the stream's entries"
            ) from None

    @staticmethod
    def _statuses(
        known: dict[int, tuple[int, str]], waiting: dict[int, dict[str, int]], scopes: list[ScopeRow]
    ) -> list[StreamStatus]:
        return [
            StreamStatus(
                scope=Scope(account, destination, stream),
                records=known.get(scope_id, (0, None))[0],
                last_delivery=_moment(known.get(scope_id, (0, None))[1]),
                failures_waiting=sum(waiting.get(scope_id, {}).values()),
                reasons=waiting.get(scope_id, {}),
            )
            for scope_id, account, destination, stream in scopes
            if scope_id in known or scope_id in waiting
        ]

    # -- leases (lease.py) --------------------------------------------------------------------------------------

    def take_lease(
        self, scope: Scope, *, ttl: float, wait: float, between: t.Callable[[], None] = lambda: None
    ) -> None:
        """Hold ``scope`` for this run, renewed every ``ttl`` / 3 until the ledger is closed, expiring ``ttl``
        seconds after the last renewal when the run dies; while another run holds it, wait up to ``wait``
        seconds, then :class:`~target_encharge.ledger.lease.LeaseHeldError` naming the holder. From then on every
        write in the scope checks the lease (its fencing token), and every lookup that a send follows. ``between``
        is called between tries and naps (at least every 0.1 s): it raises to stop waiting (a signal came)."""
        self._writable()
        scope_id = self._scope_id(scope)
        if self._leases is None:
            self._leases = Leases(self)
        self._leases.take(scope, scope_id, ttl=ttl, wait=wait, between=between)

    def leases(self) -> list[HeldLease]:
        """The leases held now, by scope: who holds each (host, process, since when)."""
        if not self._present or self._version < LEASES_SINCE:  # read-only: absent, or an older ledger
            return []
        with self._leasing(write=False) as (execute, sql):
            return held(execute, sql)

    def close(self) -> None:
        """Let the leases go and release every connection; the ledger cannot be used after."""
        if self._leases is not None and not self._closed:
            self._leases.release_all()
        self._closed = True
        self._close()

    def __enter__(self) -> SyncLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
