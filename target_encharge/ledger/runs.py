"""The run history (issue 25) and what the ledger knows of one record, in the SQL both stores speak.

One row per run: written when it starts (status ``running``) and again when it ends, whichever way it ends; a run
killed with SIGKILL stays ``running``. A delivery names no run (a column more on every delivery would cost the hot
path): the run that delivered a record is the one whose interval holds its ``delivered_at``.

Nothing here knows the report or the run: a history row comes in and goes out as a plain mapping.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t

import msgspec

from target_encharge.ledger.fingerprint import canonical_json
from target_encharge.ledger.names import DELIVERIES, FAILURES, RUNS, RUNS_SINCE, SCOPES

if t.TYPE_CHECKING:
    from target_encharge.ledger.store import SyncLedger

COLUMNS = (
    "run_id",
    "started_at",
    "ended_at",
    "status",
    "exit_code",
    "reason",
    "host",
    "pid",
    "settings_fingerprint",
    "streams",
)
_UPSERT = (
    f"INSERT INTO {RUNS} ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)}) "  # noqa: S608
    "ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("run_id", "started_at"))
)
_NEWEST = f"SELECT {', '.join(COLUMNS)} FROM {RUNS} ORDER BY started_at DESC, run_id LIMIT :limit"  # noqa: S608
_COVERING = (  # the runs whose interval holds a moment (a run still running: from its start on), newest first
    f"SELECT {', '.join(COLUMNS)} FROM {RUNS} WHERE started_at <= :moment "  # noqa: S608
    "AND (ended_at IS NULL OR ended_at >= :moment) ORDER BY started_at DESC LIMIT 20"
)
_SCOPES_OF = f"SELECT id, account, destination FROM {SCOPES} WHERE stream = :stream ORDER BY account, destination"  # noqa: S608


def has_history(ledger: SyncLedger) -> bool:
    """Whether the ledger has the runs table (a ledger opened read-only may be older, or absent)."""
    return ledger._present and ledger._version >= RUNS_SINCE


def write_run(ledger: SyncLedger, run: t.Mapping[str, t.Any]) -> None:
    """The history row of ``run`` (a :class:`~target_encharge.report.RunRecord` as a dict), inserted or replaced."""
    params = {column: run.get(column) for column in COLUMNS}
    params["streams"] = canonical_json(run.get("streams") or {})
    ledger._plain(_UPSERT, params, write=True)


def _row(row: t.Sequence[t.Any]) -> dict[str, t.Any]:
    found = dict(zip(COLUMNS, row, strict=True))
    found["streams"] = msgspec.json.decode(found["streams"]) if found["streams"] else {}
    counts = found["streams"].values()
    found["records_read"] = sum(c.get("records", 0) for c in counts)
    found["calls"] = sum(c.get("calls", 0) for c in counts)
    found["failed"] = sum(c.get("failed", 0) for c in counts)
    return found


def newest_runs(ledger: SyncLedger, limit: int) -> list[dict[str, t.Any]]:
    """The last ``limit`` runs, newest first."""
    if not has_history(ledger):
        return []
    return [_row(row) for row in ledger._plain(_NEWEST, {"limit": limit}, write=False)]


def run_at(ledger: SyncLedger, moment: str, stream: str) -> dict[str, t.Any] | None:
    """The run that wrote at ``moment`` (a stamp, as the ledger stores it) for ``stream``: of the runs whose
    interval holds it, one that counted the stream, else the newest (runs of other streams may overlap)."""
    if not has_history(ledger):
        return None
    covering = [_row(row) for row in ledger._plain(_COVERING, {"moment": moment}, write=False)]
    naming = [run for run in covering if stream in run["streams"] or run["status"] == "running"]
    chosen = naming or covering
    return chosen[0] if chosen else None


@dataclasses.dataclass
class Known:
    """What the ledger knows of one record in one scope: its delivery row (every column the table has) and its
    failure waiting, either of which may be missing."""

    account: str
    destination: str
    stream: str
    identity: str
    delivery: dict[str, t.Any] | None
    failure: dict[str, t.Any] | None


def _among(values: t.Sequence[str], name: str) -> tuple[str, dict[str, str]]:
    names = {f"{name}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{n}" for n in names), names


def records(ledger: SyncLedger, stream: str, identities: t.Sequence[str]) -> list[Known]:
    """What the ledger knows of any of ``identities`` (the forms a record's values may be known by) in each scope
    of ``stream``."""
    if not ledger._present or not identities:
        return []
    found: list[Known] = []
    placeholders, among = _among(list(dict.fromkeys(identities)), "i")
    for scope_id, account, destination in ledger._plain(_SCOPES_OF, {"stream": stream}, write=False):
        by_identity: dict[str, Known] = {}
        for table, field in ((DELIVERIES, "delivery"), (FAILURES, "failure")):
            statement = f"SELECT * FROM {table} WHERE scope_id = :scope_id AND identity IN ({placeholders})"  # noqa: S608
            rows, names = _described(ledger, statement, {"scope_id": scope_id, **among})
            for row in rows:
                values = dict(zip(names, row, strict=True))
                values.pop("scope_id", None)
                identity = values.pop("identity")
                known = by_identity.setdefault(identity, Known(account, destination, stream, identity, None, None))
                setattr(known, field, values)
        found += by_identity.values()
    return found


def _described(ledger: SyncLedger, statement: str, params: dict[str, t.Any]) -> tuple[list[tuple], list[str]]:
    """The rows of a ``SELECT *`` and its column names (the tables may hold columns newer than this module)."""
    rows = ledger._plain(statement, params, write=False)
    table = DELIVERIES if f"FROM {DELIVERIES} " in statement else FAILURES
    return rows, _columns(ledger, table)


def _columns(ledger: SyncLedger, table: str) -> list[str]:
    if ledger.location.is_sqlite:
        return [row[1] for row in ledger._plain(f"PRAGMA table_info({table})", {}, write=False)]
    return [
        row[0]
        for row in ledger._plain(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :table "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            {"table": table},
            write=False,
        )
    ]


def stamp_of(moment: datetime.datetime | str | None) -> str | None:
    """A moment as the ledger compares them (ISO 8601 text in UTC with microseconds)."""
    if moment is None or isinstance(moment, str):
        return moment
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")
