"""The ledger's tables, and the steps that bring a ledger of any older version to the current one.

Every table carries the ``encharge_ledger_`` prefix, so a ledger may share a PostgreSQL database with other
tables. ``encharge_ledger_meta`` holds ``schema_version``; a ledger whose version is newer than
:data:`SCHEMA_VERSION` was written by a newer target-encharge and is refused by the store.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from target_encharge.ledger.names import (
    ACCOUNTS,
    DELIVERIES,
    ENCHARGE_IDS,
    FAILURES,
    LEASES,
    META,
    MIRRORS,
    REMOVALS,
    RUNS,
    SCHEMA_VERSION,
    SCOPES,
    SEEN,
    SNAPSHOTS,
)

_PG_MIGRATION_LOCK = 0x656E6368  # pg_advisory_xact_lock key: one process migrates at a time

metadata = sa.MetaData()


# Moments are ISO 8601 text in UTC with microseconds (``2024-05-01T12:00:00.000000+00:00``): one fixed width, so
# they sort as time does, read the same on SQLite and PostgreSQL, and cost nothing to convert per row.
Moment = sa.String(32)


meta = sa.Table(
    META,
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# One row per (Encharge account, destination, stream); the other tables refer to it by id.
scopes = sa.Table(
    SCOPES,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    sa.UniqueConstraint("account", "destination", "stream", name="encharge_ledger_scopes_key"),
)

# What was last delivered for each identity: only ever written after Encharge answered 2xx.
deliveries = sa.Table(
    DELIVERIES,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("delivered_at", Moment, nullable=False),
    sa.Column("encharge_id", sa.Text),  # the id Encharge answered, where it gives one
    sa.Column("tags", sa.Text),  # add_tag: the tags this target added, a sorted JSON array
)

# Records that failed, with what is needed to send them again.
failures = sa.Table(
    FAILURES,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),  # the record after exclude_attributes, JSON
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.Integer),  # the HTTP status; none for a timeout, a dropped connection
    sa.Column("retryable", sa.Boolean, nullable=False),
    sa.Column("first_failed_at", Moment, nullable=False),
    sa.Column("last_failed_at", Moment, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
)

# Version 3: which Encharge account a key belongs to (a digest of the key, never the key), as the last real run
# learnt it from `GET /accounts/info`: a dry run, which calls nothing, finds its account's entries through it.
accounts = sa.Table(
    ACCOUNTS,
    metadata,
    sa.Column("key_digest", sa.String(64), primary_key=True),
    sa.Column("account", sa.Text, nullable=False),
)

# Version 5 (issue 22): mirror's snapshots live in the ledger, never in memory. A snapshot is one version of a
# stream's full table as the tap sent it (ids in the ledger's own order: versions of two taps do not compare);
# `completed_by` is 'tap' (ACTIVATE_VERSION after its records) or 'end' (the input ended normally after them).
snapshots = sa.Table(
    SNAPSHOTS,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope_id", sa.Integer, nullable=False),
    sa.Column("tap_version", sa.Text, nullable=False),
    sa.Column("opened_at", Moment, nullable=False),
    sa.Column("completed_at", Moment),
    sa.Column("completed_by", sa.String(8)),
    sa.UniqueConstraint("scope_id", "tap_version", name="encharge_ledger_snapshots_key"),
)

# The snapshot each identity of a mirrored stream was last seen in (stamped as records come).
seen = sa.Table(
    SEEN,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("snapshot_id", sa.Integer, nullable=False),
)

# Removals decided and durable, not yet answered (a `_sdc_deleted_at`, or one that failed for a reason that can
# pass: its last failure is kept here, and `status` shows it beside the failures waiting).
removals = sa.Table(
    REMOVALS,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),  # why it is removed
    sa.Column("planned_at", Moment, nullable=False),
    sa.Column("failure", sa.Text),  # why the last attempt failed (None: not sent yet)
    sa.Column("attempts", sa.Integer, nullable=False),
)

# Per mirrored scope: the stream's key properties (canonical JSON list) and whether its tap closes its versions.
mirrors = sa.Table(
    MIRRORS,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("key_properties", sa.Text),
    sa.Column("closing_seen", sa.Boolean, nullable=False),
)
_ENCHARGE_ID_INDEX = "encharge_ledger_deliveries_encharge_id"

# Version 6 (issue 23): which run holds each scope (lease.py). ``generation`` counts the takes, the fencing token
# a holder's writes are checked against; ``expires`` is seconds since the epoch by the database's own clock (so the
# machines sharing a ledger need not agree on the time); ``holder`` tells one run from another, even in one process.
leases = sa.Table(
    LEASES,
    metadata,
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("since", Moment, nullable=False),
    sa.Column("expires", sa.Float(precision=53), nullable=False),
)

# Version 8 (issue 24): the Encharge id of each person or custom object, per account, object name ("person" or the
# schema's) and identity (a person's `email:...`/`userId:...`/`id:...`, an object's `externalId:...`), as Encharge
# answered an upsert or a lookup: what association paths need. Encharge's fact, not a delivery: `forget` keeps it.
encharge_ids = sa.Table(
    ENCHARGE_IDS,
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("object_name", sa.Text, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("encharge_id", sa.Text, nullable=False),
)

# Versions 1 to 3 kept each delivery's `source_key` (its record's key properties, canonical JSON), indexed from
# version 2; nothing read it, and version 4 drops it. The deliveries table as those versions had it:
_deliveries_v1 = sa.Table(
    DELIVERIES,
    sa.MetaData(),
    sa.Column("scope_id", sa.Integer, primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("delivered_at", Moment, nullable=False),
    sa.Column("encharge_id", sa.Text),
    sa.Column("source_key", sa.Text),
    sa.Column("tags", sa.Text),
)
_SOURCE_KEY_INDEX = "encharge_ledger_deliveries_source_key"


def _create_tables(connection: sa.Connection) -> None:
    for table in (meta, scopes, _deliveries_v1, failures):
        connection.execute(sa.schema.CreateTable(table, if_not_exists=True))


def _index_source_keys(connection: sa.Connection) -> None:
    index = sa.Index(_SOURCE_KEY_INDEX, _deliveries_v1.c.scope_id, _deliveries_v1.c.source_key)
    connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def _create_accounts(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateTable(accounts, if_not_exists=True))


def _drop_source_keys(connection: sa.Connection) -> None:
    connection.execute(sa.text(f"DROP INDEX IF EXISTS {_SOURCE_KEY_INDEX}"))
    connection.execute(sa.text(f"ALTER TABLE {DELIVERIES} DROP COLUMN source_key"))


def _mirror_snapshots(connection: sa.Connection) -> None:
    """Version 5 (issue 22): snapshots, seen stamps, planned removals, and an index to find who else holds a
    person (the template's own identity) in the same destination."""
    for table in (snapshots, seen, removals, mirrors):
        connection.execute(sa.schema.CreateTable(table, if_not_exists=True))
    index = sa.Index(_ENCHARGE_ID_INDEX, deliveries.c.encharge_id)
    connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    connection.execute(
        sa.schema.CreateIndex(
            sa.Index("encharge_ledger_seen_snapshot", seen.c.scope_id, seen.c.snapshot_id), if_not_exists=True
        )
    )


def _create_leases(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateTable(leases, if_not_exists=True))


# Version 7 (issue 25): one row per run, written when it starts (status `running`) and again when it ends,
# whichever way; `streams` holds its per-stream counts, a JSON object. A delivery names no run: the run that made
# it is the one whose interval holds its `delivered_at` (see runs.py), so the hot path writes nothing more.
runs = sa.Table(
    RUNS,
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("started_at", Moment, nullable=False),
    sa.Column("ended_at", Moment),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("settings_fingerprint", sa.String(32), nullable=False),
    sa.Column("streams", sa.Text, nullable=False),
    sa.Index("encharge_ledger_runs_started_at", "started_at"),
)


def _create_runs(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateTable(runs, if_not_exists=True))
    for index in runs.indexes:
        connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def _create_encharge_ids(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateTable(encharge_ids, if_not_exists=True))


# MIGRATIONS[n] takes a ledger from version n to n + 1 (version 0: an empty database).
MIGRATIONS: tuple[t.Callable[[sa.Connection], None], ...] = (
    _create_tables,
    _index_source_keys,
    _create_accounts,
    _drop_source_keys,
    _mirror_snapshots,
    _create_leases,
    _create_runs,
    _create_encharge_ids,
)


def stored_version(connection: sa.Connection) -> int | str:
    """The schema version written in the database (0 when it holds no ledger yet; its text when it is not a
    number, which the store refuses in one line)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    if not sa.inspect(connection).has_table(meta.name):
        return 0
    value = connection.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    if value is None:
        return 0
    return int(value) if str(value).strip().isdigit() else str(value)


def migrate(connection: sa.Connection, found: int, to: int = SCHEMA_VERSION) -> None:
    """Bring a ledger at version ``found`` to version ``to``, inside the caller's transaction."""
    for step in MIGRATIONS[found:to]:
        step(connection)
    connection.execute(meta.delete().where(meta.c.name == "schema_version"))
    connection.execute(meta.insert().values(name="schema_version", value=str(to)))
