"""The run's sync: what the sync ledger says of each record before it is sent (send it, skip it as unchanged,
update the custom object that exists), and what the ledger is told once Encharge answered.

It knows the ledger and the templates, nothing of HTTP: the results tell it which entries were delivered
(after a 2xx) and which failed, and whether sending them again can pass.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t
import urllib.parse

from target_encharge.ledger import Delivered, Failure, Scope, SyncLedger, WaitingFailure, fingerprint

if t.TYPE_CHECKING:
    from target_encharge.request import Entry
    from target_encharge.templates import Template

logger = logging.getLogger("target_encharge.sync")


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """What the ledger knows one record by, and the fingerprint of what is sent."""

    identity: str
    fingerprint: str
    source_key: dict | None


@dataclasses.dataclass(frozen=True, slots=True)
class Sifted:
    """A batch's records after the ledger was asked: to send as they are, to update (custom objects that
    exist), and unchanged since their last delivery (not sent)."""

    send: list[Entry]
    update: list[Entry]
    unchanged: list[Entry]


class StreamSync:
    """One stream's sync: its scope in the ledger, its identity rule, and the ledger's answers for its records.

    ``writes`` is off in dry runs and test sends: they read the ledger and never write it."""

    def __init__(self, ledger: SyncLedger, scope: Scope, template: Template, key_properties: t.Sequence[str], *,
                 skip_unchanged: bool, resync: bool, writes: bool) -> None:
        self.ledger, self.scope, self.template = ledger, scope, template
        self.key_properties = tuple(key_properties)
        self.skip_unchanged, self.resync, self.writes = skip_unchanged, resync, writes
        self.events = template.name == "track_event"  # an event with an id is sent once, changed or not
        self._marks: dict[int, Mark] = {}  # by entry seq, from sifting until the answer
        self._lock = threading.Lock()

    def mark(self, entry: Entry) -> Mark | None:
        """The entry's identity and fingerprint (None: nothing to know it by, it is always sent)."""
        identity = self.template.identity(entry.record, self.key_properties)
        if identity is None:
            return None
        key = {k: entry.record.get(k) for k in self.key_properties} if self.key_properties else None
        return Mark(identity, fingerprint(entry.record), key)

    def sift(self, entries: t.Sequence[Entry]) -> Sifted:
        """Ask the ledger about ``entries`` (one lookup for all of them)."""
        marks = {e.seq: self.mark(e) for e in entries}
        with self._lock:
            self._marks.update({seq: m for seq, m in marks.items() if m is not None})
        known = self.ledger.fingerprints(self.scope, [m.identity for m in marks.values() if m is not None])
        send: list[Entry] = []
        update: list[Entry] = []
        unchanged: list[Entry] = []
        for entry in entries:
            mark = marks[entry.seq]
            last = known.get(mark.identity) if mark is not None else None
            if last is None:
                send.append(entry)
            elif not self.resync and (self.events or (self.skip_unchanged and last == mark.fingerprint)):
                unchanged.append(entry)
            elif self.template.upsert is not None:
                update.append(entry)
            else:
                send.append(entry)
        with self._lock:
            for entry in unchanged:
                self._marks.pop(entry.seq, None)
        return Sifted(send, update, unchanged)

    def delivered(self, entries: t.Iterable[Entry]) -> None:
        """Encharge answered 2xx for ``entries``: the ledger says so at once (not only at the next STATE)."""
        with self._lock:
            marks = [m for m in (self._marks.pop(e.seq, None) for e in entries) if m is not None]
        if self.writes and marks:
            self.ledger.mark_delivered(self.scope, [Delivered(m.identity, m.fingerprint, source_key=m.source_key)
                                                    for m in marks])

    def failed(self, entries: t.Iterable[Entry], reason: str, status: int | None, *, retryable: bool) -> None:
        """``entries`` failed for good in this run: they wait in the ledger, to be sent again at the start of
        the next run when ``retryable`` (a record without identity waits under its fingerprint)."""
        rows = []
        with self._lock:
            for entry in entries:
                mark = self._marks.pop(entry.seq, None)
                identity = mark.identity if mark is not None else f"payload:{fingerprint(entry.record)}"
                rows.append(Failure(identity=identity, payload=entry.record, reason=reason, status=status,
                                    retryable=retryable))
        if self.writes and rows:
            self.ledger.mark_failed(self.scope, rows)

    def waiting(self) -> list[WaitingFailure]:
        """Failures of earlier runs that sending again can pass, oldest first."""
        return self.ledger.waiting_failures(self.scope.account, destination=self.scope.destination,
                                            stream=self.scope.stream)

    def forget_failures(self, failures: t.Iterable[WaitingFailure]) -> None:
        """These failures are being sent again in this run; their answer writes the ledger anew."""
        if self.writes:
            self.ledger.clear_failures(self.scope, [f.identity for f in failures])


class Sync:
    """The sync ledger as one run uses it: one :class:`StreamSync` per stream, in one Encharge account."""

    def __init__(self, ledger: SyncLedger, *, skip_unchanged: bool, resync: bool, writes: bool) -> None:
        self.ledger = ledger
        self.skip_unchanged, self.resync, self.writes = skip_unchanged, resync, writes
        self.streams: dict[str, StreamSync] = {}

    def stream(self, stream: str, template: Template, key_properties: t.Sequence[str], account: str) -> StreamSync:
        """The sync of ``stream`` (made anew when its SCHEMA changes its template or key properties)."""
        scope = Scope(account, template.destination or template.name, stream)
        sync = StreamSync(self.ledger, scope, template, key_properties, skip_unchanged=self.skip_unchanged,
                          resync=self.resync, writes=self.writes)
        self.streams[stream] = sync
        return sync

    def of(self, stream: str) -> StreamSync | None:
        return self.streams.get(stream)

    def close(self) -> None:
        self.ledger.close()


def account_name(account_id: t.Any, api_url: str) -> str:  # noqa: ANN401
    """The ledger's name for an Encharge account: its id at the REST host it was reached on (so the sandbox,
    or another account, starts from nothing)."""
    host = urllib.parse.urlsplit(api_url).netloc.lower()
    return f"{account_id}@{host}"
