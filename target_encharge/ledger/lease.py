"""Leases: one run at a time in each scope (Encharge account, destination, stream).

A run takes a scope's lease when the stream's sync opens, before it reads what the ledger knows of the stream;
another run on the same scope waits for it (up to ``lease_wait``), then stops with one line naming the holder. A
thread renews the leases a run holds every third of ``lease_ttl``; a holder that dies (kill -9, a machine lost)
stops renewing, and its lease expires by itself ``lease_ttl`` after its last renewal.

Each take counts one more generation: the fencing token. Every write of the holder in the scope checks, inside its
own transaction, that the generation is still its own, so a run that lost its lease (paused past its TTL, cut off
from the server while another run took over) stops before it writes again; and it stops sending, as the lease is
checked before each batch is sifted (taken as lost once it could not be renewed for ``lease_ttl``).

A lease is a row (``encharge_ledger_leases``) read and written in short transactions: safe behind PgBouncer's
transaction pooling (session-level advisory locks are not), and on a SQLite file shared by many processes. Times
are the database's own clock, in seconds since the epoch: machines sharing a PostgreSQL ledger need not agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import socket
import threading
import time
import typing as t
import uuid

from target_encharge.ledger.connection import LedgerError
from target_encharge.ledger.names import LEASES, SCOPES

if t.TYPE_CHECKING:
    from target_encharge.ledger.store import Scope

logger = logging.getLogger("target_encharge.ledger")

POLL = 0.5  # seconds between two tries at a lease another run holds
NAP = 0.1  # seconds between two looks at whether to stop waiting for it


class Result(t.Protocol):
    """What a statement gives back, from either store's driver."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> t.Any: ...  # noqa: ANN401 - rows: each driver's own sequence


Execute = t.Callable[[str, dict[str, t.Any]], Result]  # one statement (named parameters) in an open transaction


class LeaseHeldError(LedgerError):
    """Another run holds the scope's lease, and did for longer than ``lease_wait``."""


class LeaseLostError(LedgerError):
    """This run's lease was taken by another run, or could not be renewed within its TTL."""


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: the host and process of the run, since when, and how long until it expires unless
    renewed (seconds)."""

    host: str
    pid: int
    since: str
    expires_in: float

    def __str__(self) -> str:
        return f"host {self.host}, process {self.pid}, since {_shown(self.since)}"


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease as ``target-encharge-ledger status`` shows it."""

    scope: Scope
    holder: Holder


@dataclasses.dataclass(slots=True)
class _Lease:
    scope: Scope
    scope_id: int
    generation: int
    ttl: float
    valid_until: float  # time.monotonic(): past it, another run may have taken the lease
    lost: str | None = None  # why it is lost (None: held)


def _shown(since: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(since)
    except ValueError:
        return repr(since)  # (a damaged row: shown as it is)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@functools.lru_cache(maxsize=4)
def statements(clock: str, lock: str) -> dict[str, str]:
    """The lease statements for a store whose SQL says "now, in seconds since the epoch" as ``clock`` and reads
    a row it must keep unchanged until its transaction ends with ``lock`` after the query (PostgreSQL's
    ``FOR SHARE``; SQLite's write transaction already excludes every other writer)."""
    return {
        "claim": (
            f"INSERT INTO {LEASES} (scope_id, generation, holder, host, pid, since, expires) "  # noqa: S608
            "VALUES (:scope_id, 0, '', '', 0, '', 0) ON CONFLICT (scope_id) DO NOTHING"
        ),
        "take": (
            f"UPDATE {LEASES} SET generation = generation + 1, holder = :holder, host = :host, pid = :pid, "  # noqa: S608
            f"since = :since, expires = {clock} + :ttl WHERE scope_id = :scope_id AND expires <= {clock}"
        ),
        "read": (
            f"SELECT generation, holder, host, pid, since, expires - {clock} FROM {LEASES} "  # noqa: S608
            "WHERE scope_id = :scope_id"
        ),
        "renew": (
            f"UPDATE {LEASES} SET expires = {clock} + :ttl "  # noqa: S608
            "WHERE scope_id = :scope_id AND generation = :generation AND holder = :holder"
        ),
        "release": (
            f"UPDATE {LEASES} SET expires = 0 "  # noqa: S608
            "WHERE scope_id = :scope_id AND generation = :generation AND holder = :holder"
        ),
        "fence": f"SELECT generation, holder FROM {LEASES} WHERE scope_id = :scope_id{lock}",  # noqa: S608
        "held": (
            f"SELECT s.account, s.destination, s.stream, l.host, l.pid, l.since, l.expires - {clock} "  # noqa: S608
            f"FROM {LEASES} l JOIN {SCOPES} s ON s.id = l.scope_id WHERE l.expires > {clock} "
            "ORDER BY s.account, s.destination, s.stream"
        ),
    }


class Store(t.Protocol):
    """What the leases need of a ledger's store (see :class:`~target_encharge.ledger.store.SyncLedger`)."""

    def _leasing(self, *, write: bool) -> t.ContextManager[tuple[Execute, dict[str, str]]]: ...

    def _lease_error(self, what: str) -> str: ...


class Leases:
    """The leases one open ledger holds (one holder: this run, told apart from other runs of the same process),
    and the thread that renews them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.holder = f"{self.host}:{self.pid}:{uuid.uuid4().hex}"
        self._held: dict[int, _Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- taking ------------------------------------------------------------------------------------------------

    def take(
        self, scope: Scope, scope_id: int, *, ttl: float, wait: float, between: t.Callable[[], None] = lambda: None
    ) -> None:
        """The lease of ``scope`` for this run, waiting up to ``wait`` seconds while another run holds it;
        :class:`LeaseHeldError` after that. Taken already (the stream's SCHEMA came again): checked."""
        if scope_id in self._held:
            self.ensure_held(scope_id)
            return
        deadline, told = time.monotonic() + wait, False
        while True:
            started = time.monotonic()
            holder = self._try(scope_id, ttl, started, scope)
            if holder is None:
                self._start_renewing(ttl)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise LeaseHeldError(
                    self._store._lease_error(
                        f"stream {scope.stream!r} is being synced by another run ({holder}); waited {wait:g} s "
                        "(lease_wait), nothing was sent for it: let that run finish, or raise lease_wait"
                    )
                )
            if not told:
                logger.warning(
                    "Stream '%s' is being synced by another run (%s): waiting up to %g s for it (lease_wait)",
                    scope.stream,
                    holder,
                    wait,
                )
                told = True
            until = time.monotonic() + min(POLL, left, max(holder.expires_in, 0.05))
            while (nap := until - time.monotonic()) > 0:
                between()  # (raises to stop waiting)
                time.sleep(min(nap, NAP))
            between()

    def _try(self, scope_id: int, ttl: float, started: float, scope: Scope) -> Holder | None:
        """One try: None when the lease is now this run's, else who holds it."""
        with self._store._leasing(write=True) as (execute, sql):
            execute(sql["claim"], {"scope_id": scope_id})
            taken = execute(
                sql["take"],
                {
                    "scope_id": scope_id,
                    "holder": self.holder,
                    "host": self.host,
                    "pid": self.pid,
                    "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
                    "ttl": ttl,
                },
            ).rowcount
            ((generation, _holder, host, pid, since, expires_in),) = execute(
                sql["read"], {"scope_id": scope_id}
            ).fetchall()
        if taken != 1:
            return Holder(str(host), int(pid), str(since), float(expires_in))
        with self._lock:
            self._held[scope_id] = _Lease(scope, scope_id, int(generation), ttl, started + ttl)
        return None

    # -- holding -----------------------------------------------------------------------------------------------

    def holds(self, scope_id: int) -> bool:
        """Whether this run holds the lease of ``scope_id`` (so no other run writes in the scope meanwhile)."""
        lease = self._held.get(scope_id)
        return lease is not None and lease.lost is None

    def ensure_held(self, scope_id: int | None) -> None:
        """Before a batch of the scope is sent: :class:`LeaseLostError` when this run's lease is lost, or could
        not be renewed for its TTL (another run may hold it now)."""
        lease = self._held.get(scope_id) if scope_id is not None else None
        if lease is None:
            return
        if lease.lost is None and time.monotonic() > lease.valid_until:
            lease.lost = self._store._lease_error(
                f"the lease of stream {lease.scope.stream!r} could not be renewed for {lease.ttl:g} s (lease_ttl); "
                "this run stopped sending, another may have taken the stream over"
            )
        if lease.lost is not None:
            raise LeaseLostError(lease.lost)

    def token(self, scope_id: int) -> tuple[int, str] | None:
        """The fencing token of a lease this run holds (generation and holder), for a write that checks it in its
        own statement (None: no lease held in the scope)."""
        lease = self._held.get(scope_id)
        if lease is None:
            return None
        if lease.lost is not None:
            raise LeaseLostError(lease.lost)
        return lease.generation, self.holder

    def fenced_out(self, scope_id: int) -> t.NoReturn:
        """A write that checked the token in its own statement wrote nothing: the lease is another run's."""
        lease = self._held[scope_id]
        lease.lost = lease.lost or self._store._lease_error(
            f"another run took over stream {lease.scope.stream!r} (its lease, generation {lease.generation}, "
            "expired: this run could not renew it within lease_ttl); this run stopped before writing again"
        )
        raise LeaseLostError(lease.lost)

    def fence(self, execute: Execute, sql: dict[str, str], scope_id: int) -> None:
        """Inside a write transaction of the scope: :class:`LeaseLostError` (and nothing written) unless the lease
        is still this run's, at its generation."""
        lease = self._held.get(scope_id)
        if lease is None:
            return
        rows = execute(sql["fence"], {"scope_id": scope_id}).fetchall()
        if lease.lost is None and (not rows or (int(rows[0][0]), rows[0][1]) != (lease.generation, self.holder)):
            lease.lost = self._store._lease_error(
                f"another run took over stream {lease.scope.stream!r} (its lease, generation {lease.generation}, "
                "expired: this run could not renew it within lease_ttl); this run stopped before writing again"
            )
        if lease.lost is not None:
            raise LeaseLostError(lease.lost)

    def _start_renewing(self, ttl: float) -> None:
        with self._lock:
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_every, args=(ttl / 3,), name="target-encharge-lease", daemon=True
                )
                self._renewer.start()

    def _renew_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.renew()

    def renew(self) -> None:
        """Every lease held pushed ``ttl`` further; one taken by another run is marked lost."""
        with self._lock:
            held = [lease for lease in self._held.values() if lease.lost is None]
        for lease in held:
            started = time.monotonic()
            try:
                with self._store._leasing(write=True) as (execute, sql):
                    params = {"scope_id": lease.scope_id, "generation": lease.generation, "holder": self.holder}
                    renewed = execute(sql["renew"], {**params, "ttl": lease.ttl}).rowcount
            except LedgerError as exc:  # the server away a moment: tried again; check() stops past the TTL
                logger.warning("Could not renew the lease of stream '%s' (tried again): %s", lease.scope.stream, exc)
                continue
            if renewed == 1:
                lease.valid_until = started + lease.ttl
            else:
                lease.lost = self._store._lease_error(
                    f"another run took over stream {lease.scope.stream!r} (this run's lease expired before it "
                    "could be renewed); this run stopped before writing again"
                )

    # -- letting go --------------------------------------------------------------------------------------------

    def release_all(self) -> None:
        """The run is over: the renewals stop and every lease still held is let go (another run may take it at
        once); one that cannot be let go expires by itself."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        with self._lock:
            held, self._held = [lease for lease in self._held.values() if lease.lost is None], {}
        if not held:
            return
        with contextlib.suppress(LedgerError), self._store._leasing(write=True) as (execute, sql):
            for lease in held:
                params = {"scope_id": lease.scope_id, "generation": lease.generation, "holder": self.holder}
                execute(sql["release"], params)


def held(execute: Execute, sql: dict[str, str]) -> list[HeldLease]:
    """Every lease held now (not expired), by scope."""
    from target_encharge.ledger.store import Scope

    return [
        HeldLease(
            Scope(str(account), str(destination), str(stream)), Holder(str(host), int(pid), str(since), float(left))
        )
        for account, destination, stream, host, pid, since, left in execute(sql["held"], {}).fetchall()
    ]
