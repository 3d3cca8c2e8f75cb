"""The run's sync: what the sync ledger says of each record before it is sent (send it, skip it as unchanged or
by the stream's sync mode, update the custom object that exists), what `mirror` removes, and what the ledger is
told once Encharge answered.

It knows the ledger and the templates, nothing of HTTP: asking Encharge what exists is a function it is given,
and the results tell it which entries were delivered (after a 2xx) and which failed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t
import urllib.parse

from target_encharge.ledger import Delivered, DeliveryRow, Failure, Scope, SyncLedger, WaitingFailure, fingerprint
from target_encharge.templates import Removal, encharge_ids

if t.TYPE_CHECKING:
    from target_encharge.request import Entry
    from target_encharge.templates import Template

logger = logging.getLogger("target_encharge.sync")

EXISTS = ""  # the fingerprint of an entry known to exist in Encharge that this target did not write


@dataclasses.dataclass(slots=True)  # not frozen: one is made for every record sent, and frozen ones cost twice
class Mark:
    """What the ledger knows one record by, what Encharge knows it by, and the fingerprint of what is sent: once
    Encharge answered 2xx, the very row the ledger writes (a :class:`~target_encharge.ledger.DeliveryRow`)."""

    identity: str
    encharge_id: str | None  # the template's own identity (email, externalId, person and tag): what a removal names
    fingerprint: str
    known: bool = False  # the ledger knew it before this run sent it (an update, not a create)
    tags: t.ClassVar[None] = None  # (tags are the ledger's to keep: written as None, the known ones stay)
    delivered_at: t.ClassVar[None] = None  # (now, as the ledger writes it)


@dataclasses.dataclass(slots=True)
class Sifted:
    """A batch's records after the ledger was asked: to send as they are, to update (custom objects that exist),
    unchanged since their last delivery, and skipped by the stream's sync mode."""

    send: list[Entry] = dataclasses.field(default_factory=list)
    update: list[Entry] = dataclasses.field(default_factory=list)
    unchanged: list[Entry] = dataclasses.field(default_factory=list)
    skipped: list[Entry] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """One removal `mirror` is to make: who, the request, and why."""

    identity: str
    ids: dict
    removal: Removal
    why: str


class DeleteGuardError(Exception):
    """More removals than `max_delete_share` allows: none of them is sent."""


# whether each entry's person or object is in Encharge; None: it could not be asked about (it failed alone)
Exists = t.Callable[[t.Sequence["Entry"]], t.Sequence[t.Optional[bool]]]


class GroupCommit:
    """Deliveries written as they come, several workers' in one transaction: a worker whose rows arrive while
    another is writing waits for that write, then writes every row waiting since (its own among them), so under
    load one commit carries many calls' rows; alone, a worker writes at once. Each returns once its rows are in."""

    def __init__(self, write: t.Callable[[list[DeliveryRow]], None]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._pending: list[DeliveryRow] = []
        self._next = 0  # the number of the group rows join now
        self._done = 0  # every group numbered below this is written
        self._writing = False
        self._failed: dict[int, BaseException] = {}

    def write(self, rows: list[DeliveryRow]) -> None:
        with self._cond:
            self._pending.extend(rows)
            group = self._next
            while self._done <= group and self._writing:
                self._cond.wait()
            if self._done > group:  # written by another worker's commit
                if group in self._failed:
                    raise self._failed[group]
                return
            self._writing = True
            rows, self._pending = self._pending, []
            self._next += 1
        try:
            self._write(rows)
        except BaseException as exc:
            with self._cond:
                self._failed[group] = exc
            raise
        finally:
            with self._cond:
                self._writing = False
                self._done = group + 1
                self._cond.notify_all()


class StreamSync:
    """One stream's sync: its scope in the ledger, its identity rule, its mode, and the ledger's answers.

    ``writes`` is off in dry runs and test sends: they read the ledger and never write it. ``exists`` is None
    when Encharge cannot be asked (a dry run): then what the ledger does not know is taken as not there."""

    def __init__(
        self,
        ledger: SyncLedger,
        scope: Scope,
        template: Template,
        key_properties: t.Sequence[str],
        *,
        mode: str = "upsert",
        delete_action: str = "archive",
        skip_unchanged: bool = True,
        resync: bool = False,
        writes: bool = True,
        exists: Exists | None = None,
        redact: t.Callable[[t.Any], t.Any] = lambda value: value,
    ) -> None:
        self.ledger, self.scope, self.template = ledger, scope, template
        self.redact = redact  # a failure's payload is kept with the keys masked, as in every output
        self.key_properties = tuple(key_properties)
        self.mode, self.delete_action = mode, delete_action
        self.skip_unchanged, self.resync, self.writes, self.exists = skip_unchanged, resync, writes, exists
        self.events = template.events  # an event with an id is sent once, changed or not
        self.seen: dict[str, str | None] = {}  # mirror: identity -> its template identity, since the last version
        self._marks: dict[int, Mark] = {}  # by entry seq, from sifting until the answer
        self._removing: dict[int, str] = {}  # by entry seq: the identity a removal request removes
        self._lock = threading.Lock()
        self._commit = GroupCommit(lambda rows: ledger.mark_delivered(scope, rows))

    # before sending

    def mark(
        self, entry: Entry, *, known: bool = False, identity: str | None = None, fingerprinted: str | None = None
    ) -> Mark | None:
        """The entry's identities and fingerprint (None: nothing to know it by, it is always sent).
        ``identity`` and ``fingerprinted``: the ledger's identity and the fingerprint, when already found."""
        identity = identity or self.template.identity(entry.record, self.key_properties, entry.ids)
        if identity is None:
            return None
        record = entry.record
        return Mark(identity, self._target(record, identity, entry.ids), fingerprinted or fingerprint(record), known)

    def _target(self, record: dict, identity: str, ids: dict | None = None) -> str | None:
        """The template's own identity of ``record`` (what a removal names), given its ledger ``identity``."""
        return self.template.identity(record, ids=ids) if self.key_properties else identity

    def saw(self, record: dict) -> None:
        """A record of the stream came (sent, unchanged or refused, it is in the source): mirror keeps it."""
        if self.mode == "mirror":
            identity = self.template.identity(record, self.key_properties)
            if identity is not None:
                self.seen[identity] = self._target(record, identity)

    def sift(self, entries: t.Sequence[Entry]) -> Sifted:
        """Ask the ledger about ``entries`` (one lookup for all of them), and Encharge about those the mode needs
        to know exist: in `create` what the ledger does not know, in `update` every record about to be sent
        (whatever the ledger says: a person erased in Encharge since is never created again)."""
        identities = {e.seq: self.template.identity(e.record, self.key_properties, e.ids) for e in entries}
        known = self.ledger.fingerprints(self.scope, [i for i in identities.values() if i is not None])
        sifted = Sifted()
        asking = self.mode in ("update", "create")
        unsure: list[Entry] = []  # update/create: Encharge is asked whether they exist
        marks: dict[int, Mark | None] = {}  # of the entries that may be sent: written to the ledger on delivery
        for entry in entries:
            identity = identities[entry.seq]
            last = known.get(identity) if identity is not None else None
            if last is None:  # not in the ledger (a fingerprint only where it will be written: not in a dry run)
                marks[entry.seq] = self.mark(entry, identity=identity) if identity and self.writes else None
                (unsure if identity is not None and asking else sifted.send).append(entry)
                continue
            if self.mode == "create":
                sifted.skipped.append(entry)  # it exists: create leaves it as it is
                continue
            # an event with an id is sent once; the others when changed (a fingerprint compared first, and a
            # whole mark made only for what is sent)
            printed = None if self.events else fingerprint(entry.record)
            if last != EXISTS and not self.resync and (self.events or (self.skip_unchanged and last == printed)):
                sifted.unchanged.append(entry)
                continue
            marks[entry.seq] = self.mark(entry, known=True, identity=identity, fingerprinted=printed)
            if asking:  # update: the ledger knows it, Encharge is asked all the same
                unsure.append(entry)
            else:
                (sifted.update if self.template.upsert is not None else sifted.send).append(entry)
        if unsure:
            self._ask_encharge(unsure, marks, sifted)
        if self.writes:  # kept until the answer, which writes them (a dry run keeps nothing: memory stays flat)
            with self._lock:
                for entry in [*sifted.send, *sifted.update]:
                    mark = marks[entry.seq]
                    if mark is not None:
                        self._marks[entry.seq] = mark
        return sifted

    def _ask_encharge(self, entries: list[Entry], marks: dict[int, Mark | None], sifted: Sifted) -> None:
        """Sort ``entries`` by what Encharge says of them; what it taught is remembered: in `create`, what is
        there already (so it is not asked again); in `update`, what the ledger knew and is gone (forgotten, so
        it is asked again next time). A dry run, which cannot ask, takes what the ledger knows as there."""
        if self.exists is not None:
            there = self.exists(entries)
        else:
            there = [bool(mark is not None and mark.known) for mark in (marks[e.seq] for e in entries)]
        remembered, gone = [], []
        for entry, exists in zip(entries, there, strict=True):
            mark = marks[entry.seq]
            if exists is None:  # it could not be asked about: it failed alone, with its reason
                continue
            if self.mode == "update":
                if not exists:
                    sifted.skipped.append(entry)  # update never creates
                    if mark is not None and mark.known:
                        gone.append(mark.identity)
                elif self.template.upsert is not None:
                    sifted.update.append(entry)
                else:
                    sifted.send.append(entry)
            elif exists:  # create: it is there already; remembered so it is not asked again
                sifted.skipped.append(entry)
                if mark is not None:
                    remembered.append(Delivered(mark.identity, EXISTS, encharge_id=mark.encharge_id))
            else:
                sifted.send.append(entry)
        if self.writes and remembered:
            self.ledger.mark_delivered(self.scope, remembered)
        if self.writes and gone:
            logger.info(
                "Stream '%s': %d record(s) the ledger knew are no longer in Encharge: skipped (update never "
                "creates) and forgotten",
                self.scope.stream,
                len(gone),
            )
            self.ledger.remove(self.scope, gone)

    # after the answer

    def holds(self, seq: int) -> bool:
        """Whether the entry numbered ``seq`` was sifted (or planned for removal) here and is not settled yet."""
        return seq in self._marks or seq in self._removing

    def delivered(self, entries: t.Iterable[Entry]) -> list[Mark | None]:
        """Encharge answered 2xx for ``entries``: the ledger says so at once (not only at the next STATE).
        Returns each entry's mark (its ``known`` tells an update from a create)."""
        with self._lock:
            marks = [self._marks.pop(e.seq, None) for e in entries]
        rows: list[DeliveryRow] = [mark for mark in marks if mark is not None]
        if self.writes and rows:
            self._commit.write(rows)
        return marks

    def failed(self, entries: t.Iterable[Entry], reason: str, status: int | None, *, retryable: bool) -> None:
        """``entries`` failed for good in this run: they wait in the ledger, to be sent again at the start of
        the next run when ``retryable`` (a record without identity waits under its fingerprint)."""
        rows = []
        with self._lock:
            for entry in entries:
                mark = self._marks.pop(entry.seq, None) or self.mark(entry)
                identity = mark.identity if mark is not None else f"payload:{fingerprint(entry.record)}"
                rows.append(
                    Failure(
                        identity=identity,
                        payload=self.redact(entry.record),
                        reason=self.redact(reason),
                        status=status,
                        retryable=retryable,
                    )
                )
        if self.writes and rows:
            self.ledger.mark_failed(self.scope, rows)

    def waiting(self) -> list[WaitingFailure]:
        """Failures of earlier runs that sending again can pass, oldest first."""
        return self.ledger.waiting_failures(
            self.scope.account, destination=self.scope.destination, stream=self.scope.stream
        )

    # mirror

    def deleted(self, record: dict) -> Planned | None:
        """The removal a record marked deleted (`_sdc_deleted_at`) asks for: only of what this target wrote
        (the ledger maps a record carrying only its key properties to the person or object it was sent as)."""
        identity = self.template.identity(record, self.key_properties)
        if identity is None:
            return None
        self.seen.pop(identity, None)
        entry = self.ledger.lookup(self.scope, [identity]).get(identity)
        if entry is None or entry.fingerprint == EXISTS:
            return None
        return self._plan(identity, entry.encharge_id, "the source marked it deleted (_sdc_deleted_at)")

    def left_the_source(self, max_share: float) -> list[Planned]:
        """At the tap's ACTIVATE_VERSION: what the ledger knows this target wrote for the stream and that did
        not come in this version. Nothing when nothing came (a first sync's ACTIVATE_VERSION before any record,
        or an empty snapshot); :class:`DeleteGuardError` when more than ``max_share`` of what is known would go."""
        seen, self.seen = self.seen, {}
        if not seen:
            return []
        known = {i: d for i, d in self.ledger.known(self.scope).items() if d.fingerprint != EXISTS}
        gone = [i for i in known if i not in seen]
        if known and len(gone) > max_share * len(known):
            msg = (
                f"stream '{self.scope.stream}': mirror would remove {len(gone):,} of the {len(known):,} records "
                f"it wrote ({len(gone) / len(known):.0%}), more than max_delete_share={max_share:g} allows; "
                f"nothing was removed (raise max_delete_share if the source really lost them)"
            )
            raise DeleteGuardError(msg)
        live_tags = self._live_tags(seen.values())
        plans = [
            self._plan(i, known[i].encharge_id, "not in the source's latest full version (ACTIVATE_VERSION)", live_tags)
            for i in sorted(gone)
        ]
        return [p for p in plans if p is not None]

    def _plan(
        self, identity: str, target: str | None, why: str, live_tags: dict[str, set[str]] | None = None
    ) -> Planned | None:
        removal = self.template.removal
        ids = encharge_ids(target or identity)
        if removal is None or not ids:
            return None
        if "tag" in ids:  # a tag still added by another record of the stream stays
            person = target.partition(" tag:")[0] if target else identity
            keep = (live_tags or {}).get(person, set())
            tags = [tag for tag in ids["tag"].split(",") if tag and tag not in keep]
            if not tags:
                return None
            ids = {**ids, "tag": ",".join(tags)}
        return Planned(identity, ids, removal(ids, self.delete_action), why)

    @staticmethod
    def _live_tags(targets: t.Iterable[str | None]) -> dict[str, set[str]]:
        live: dict[str, set[str]] = {}
        for target in targets:
            if target and " tag:" in target:
                person, _, tags = target.partition(" tag:")
                live.setdefault(person, set()).update(tags.split(","))
        return live

    def removing(self, seq: int, plan: Planned) -> None:
        """The entry numbered ``seq`` carries ``plan``'s removal."""
        with self._lock:
            self._removing[seq] = plan.identity

    def removed_entries(self, entries: t.Iterable[Entry]) -> None:
        """Encharge removed these (2xx, or 404: already gone): the ledger forgets them."""
        with self._lock:
            identities = [i for i in (self._removing.pop(e.seq, None) for e in entries) if i is not None]
        if self.writes and identities:
            self.ledger.remove(self.scope, identities)


class Sync:
    """The sync ledger as one run uses it: one :class:`StreamSync` per stream, in one Encharge account."""

    def __init__(
        self,
        ledger: SyncLedger,
        *,
        skip_unchanged: bool,
        resync: bool,
        writes: bool,
        redact: t.Callable[[t.Any], t.Any] = lambda value: value,
    ) -> None:
        self.ledger, self.redact = ledger, redact
        self.skip_unchanged, self.resync, self.writes = skip_unchanged, resync, writes
        self.streams: dict[str, StreamSync] = {}  # each stream's sync, for its latest SCHEMA
        self._replaced: dict[str, list[StreamSync]] = {}  # a stream's earlier syncs: their calls may be in flight

    def stream(
        self,
        stream: str,
        template: Template,
        key_properties: t.Sequence[str],
        account: str,
        *,
        mode: str = "upsert",
        delete_action: str = "archive",
        exists: Exists | None = None,
    ) -> StreamSync:
        """The sync of ``stream`` (made anew when its SCHEMA comes again)."""
        scope = Scope(account, template.destination or template.name, stream)
        sync = StreamSync(
            self.ledger,
            scope,
            template,
            key_properties,
            mode=mode,
            delete_action=delete_action,
            skip_unchanged=self.skip_unchanged,
            resync=self.resync,
            writes=self.writes,
            exists=exists,
            redact=self.redact,
        )
        earlier = self.streams.get(stream)
        if earlier is not None:  # a new SCHEMA: the old sink's batches may still be sent, and answered
            self._replaced.setdefault(stream, []).append(earlier)
        self.streams[stream] = sync
        return sync

    def of(self, stream: str, entries: t.Sequence[Entry] = ()) -> StreamSync | None:
        """The sync that sifted ``entries`` (when a SCHEMA came for the stream since, an earlier one), else the
        stream's latest: a request settles against the sync that sent it, so the ledger records its answer."""
        latest = self.streams.get(stream)
        if not entries or latest is None or latest.holds(entries[0].seq):
            return latest
        seq = entries[0].seq
        return next((s for s in reversed(self._replaced.get(stream, ())) if s.holds(seq)), latest)

    def close(self) -> None:
        self.ledger.close()


def account_name(account_id: t.Any, url: str) -> str:  # noqa: ANN401
    """The ledger's name for an Encharge account: its id at the host it was reached on (so the sandbox, or
    another account, starts from nothing)."""
    return f"{account_id}@{urllib.parse.urlsplit(url).netloc.lower()}"
