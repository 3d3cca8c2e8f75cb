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
import uuid

from target_encharge.ledger import (
    Candidate,
    Delivered,
    DeliveryRow,
    Failure,
    Scope,
    SyncLedger,
    WaitingFailure,
    canonical_json,
    fingerprint,
)
from target_encharge.templates import Removal, encharge_ids, single_tags

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
    more: tuple[Mark, ...] = ()  # add_tag: the rows of the record's other single tags (one call carries them all)
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


STAMPS_HELD = 1000  # identities seen, written to the ledger in one go (and before any STATE after them goes out)
DRY = -1  # a dry run's snapshot of this run (never written): after every snapshot the ledger has


@dataclasses.dataclass
class ScopeRun:
    """What one run knows of a mirrored scope's snapshots: a few ids, never the identities (they are stamped in
    the ledger as they come). Kept by the run's :class:`Sync`, so a second SCHEMA (a new sink) changes nothing."""

    current: int | None = None  # the snapshot records without a `version` belong to
    version: str | None = None  # the tap's version of ``current``
    fed: set[int] = dataclasses.field(default_factory=set)  # snapshots that had records in this run
    completed: set[int] = dataclasses.field(default_factory=set)  # completed by the tap in this run
    stamps: list[str] = dataclasses.field(default_factory=list)  # seen, not yet written
    planned: bool = False  # the scope has removals planned: a record of one clears it at once
    rekeyed: str | None = None  # the key properties the scope had before this run, when they changed
    unversioned: set[int] = dataclasses.field(default_factory=set)  # opened by records without `version`: only
    # an ACTIVATE_VERSION after them completes one (a log-based stream, which sends none, never completes any)
    dry_seen: set[str] = dataclasses.field(default_factory=set)  # a dry run (which writes nothing) keeps them
    dry_planned: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Removals:
    """What the end of a run decided for one mirrored scope: the removals to send, the identities released (held
    by another row of the destination), those waiting for one more complete snapshot (with why), or the guard's
    refusal (then nothing is sent)."""

    plans: list[Planned]
    released: int = 0
    waiting: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    refusal: str | None = None


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
        snapshots: ScopeRun | None = None,
    ) -> None:
        self.ledger, self.scope, self.template = ledger, scope, template
        self.redact = redact  # a failure's payload is kept with the keys masked, as in every output
        self.key_properties = tuple(key_properties)
        self.mode, self.delete_action = mode, delete_action
        self.skip_unchanged, self.resync, self.writes, self.exists = skip_unchanged, resync, writes, exists
        self.events = template.events  # an event with an id is sent once, changed or not
        self.snapshots = snapshots if snapshots is not None else ScopeRun()  # mirror: this run's snapshots
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
        if self.template.parts is not None:
            return self._part_mark(entry, {})
        identity = identity or self.template.identity(entry.record, self.key_properties, entry.ids)
        if identity is None:
            return None
        record = entry.record
        return Mark(identity, self._target(record, identity, entry.ids), fingerprinted or fingerprint(record), known)

    def _part_mark(self, entry: Entry, known: dict[str, str]) -> Mark | None:
        """add_tag: a mark per single tag of the record (the first carries the others in ``more``), each
        fingerprinted as the record with that tag alone; ``known``: the fingerprints the ledger has."""
        parts = self.template.part_identities(entry.record, self.key_properties, entry.ids)
        person = self.template.part_prefix(entry.record, ids=entry.ids)
        if not parts or person is None:
            return None
        marks = [
            Mark(identity, person + tag, fingerprint({**entry.record, "tag": tag}), identity in known)
            for identity, tag in parts
        ]
        marks[0].more = tuple(marks[1:])
        return marks[0]

    def _identities(self, record: dict) -> list[str]:
        """What the ledger knows ``record`` by: one identity, or (add_tag) one per single tag."""
        if self.template.parts is not None:
            return [identity for identity, _ in self.template.part_identities(record, self.key_properties)]
        identity = self.template.identity(record, self.key_properties)
        return [] if identity is None else [identity]

    def _target(self, record: dict, identity: str, ids: dict | None = None) -> str | None:
        """The template's own identity of ``record`` (what a removal names), given its ledger ``identity``."""
        return self.template.identity(record, ids=ids) if self.key_properties else identity

    def saw(self, record: dict, version: t.Any = None) -> None:  # noqa: ANN401
        """A record of the stream came (sent, unchanged or refused, it is in the source): mirror stamps its
        identity with the snapshot it came in (``version``: the record's; None: the snapshot open in this run)."""
        if self.mode != "mirror":
            return
        identities = self._identities(record)
        if not identities:
            if self.template.parts is not None and self.key_properties and "tag" in record:
                self._tags_dropped(record, [])  # keyed by its person, an empty tag set: every tag left it
            return
        run = self.snapshots
        if version is not None and str(version) != run.version:
            self._open(str(version))
        elif version is None and run.current is None:  # records before any ACTIVATE_VERSION, without `version`
            self._open(f"unversioned {uuid.uuid4().hex}")
            if run.current is not None:
                run.unversioned.add(run.current)
        if run.current is not None and run.current not in run.fed:
            run.fed.add(run.current)
            run.completed.discard(run.current)
            if self.writes:
                self.ledger.reopen_snapshot(self.scope, run.current)  # records of a completed one: it was not the end
        if not self.writes:
            run.dry_seen.update(identities)
            run.dry_planned = [(i, why) for i, why in run.dry_planned if i not in identities]
        elif run.current is not None or run.planned:  # (else no snapshot to stamp: only `_sdc_deleted_at` removes)
            run.stamps.extend(identities)
        if self.template.parts is not None and self.key_properties:
            self._tags_dropped(record, identities)
        if not self.writes or not run.stamps:
            return
        if run.planned or len(run.stamps) >= STAMPS_HELD:  # a planned removal is cleared before the record is sifted
            self.flush()

    def _tags_dropped(self, record: dict, identities: list[str]) -> None:
        """add_tag keyed by its person: the tags the ledger holds for the record's key that its tag set no
        longer has are planned for removal at once (durable, like `_sdc_deleted_at`'s, within the same guard)."""
        prefix = self.template.part_prefix(record, self.key_properties)
        if prefix is None:
            return
        dropped = sorted(set(self.ledger.identities_under(self.scope, prefix)) - set(identities))
        if not dropped:
            return
        why = "no longer in its record's tag set"
        self.flush()  # what came before it is stamped (and clears what was planned) before this plan
        if self.writes:
            self.ledger.plan_removals(self.scope, [(identity, why) for identity in dropped])
        else:
            self.snapshots.dry_planned.extend((identity, why) for identity in dropped)
            self.snapshots.dry_seen.difference_update(dropped)
        self.snapshots.planned = True

    def _open(self, version: str) -> None:
        """The snapshot of ``version`` becomes the current one (found again in the ledger, or opened)."""
        self.flush()
        run = self.snapshots
        run.version = version
        if not self.writes:
            run.current = DRY
            return
        snapshot = self.ledger.snapshot(self.scope, version)
        run.current = snapshot.id
        if snapshot.completed_by is not None and snapshot.id not in run.fed:
            run.completed.discard(snapshot.id)

    def flush(self) -> None:
        """The identities seen since the last flush go to the ledger (before a STATE after them can go out)."""
        run = self.snapshots
        stamps, run.stamps = run.stamps, []
        if not stamps or not self.writes:
            return
        if run.current is not None:
            self.ledger.stamp_seen(self.scope, run.current, stamps, clear=run.planned)
        elif run.planned:
            self.ledger.clear_removals(self.scope, stamps)

    def sift(self, entries: t.Sequence[Entry]) -> Sifted:
        """Ask the ledger about ``entries`` (one lookup for all of them), and Encharge about those the mode needs
        to know exist: in `create` what the ledger does not know, in `update` every record about to be sent
        (whatever the ledger says: a person erased in Encharge since is never created again)."""
        if self.template.parts is not None:
            return self._sift_parts(entries)
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

    def _sift_parts(self, entries: t.Sequence[Entry]) -> Sifted:
        """add_tag: a record is unchanged when every one of its single tags is (each a row of the ledger); else
        it is sent whole, its tags joined in one call."""
        parts = {e.seq: self.template.part_identities(e.record, self.key_properties, e.ids) for e in entries}
        known = self.ledger.fingerprints(self.scope, [i for found in parts.values() for i, _ in found])
        sifted = Sifted()
        for entry in entries:
            found = parts[entry.seq]
            if (
                found
                and self.skip_unchanged
                and not self.resync
                and all(
                    known.get(i) not in (None, EXISTS) and known[i] == fingerprint({**entry.record, "tag": tag})
                    for i, tag in found
                )
            ):
                sifted.unchanged.append(entry)
                continue
            sifted.send.append(entry)
            mark = self._part_mark(entry, known) if self.writes else None
            if mark is not None:
                with self._lock:
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
        rows: list[DeliveryRow] = [row for mark in marks if mark is not None for row in (mark, *mark.more)]
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

    def opened(self) -> str | None:
        """A mirrored stream's start: its key properties remembered; a warning when they changed since the last
        run (the rows under the old key are released, never removed, as the new ones hold the same people)."""
        if self.mode != "mirror":
            return None
        before = self.ledger.mirror_of(self.scope)
        keys = canonical_json(list(self.key_properties))
        self.snapshots.planned = self.ledger.has_planned(self.scope)
        if self.writes and (before is None or before[0] != keys):
            self.ledger.remember_mirror(self.scope, self.key_properties)
        if before is not None and before[0] is not None and before[0] != keys:
            self.snapshots.rekeyed = before[0]
            return (
                f"stream '{self.scope.stream}': its key properties changed from {before[0]} to {keys}: records "
                "known under the old key are not removed while the new ones hold the same people (released); "
                "run once with resync to send every record again"
            )
        return None

    def deleted(self, record: dict) -> bool:
        """A record marked deleted (`_sdc_deleted_at`): the removal of what this target wrote for it is planned,
        durable at once (its STATE may go), and sent at the end of the run; a later record of it clears it (the
        last word wins). False: nothing this target wrote (the ledger maps a record carrying only its key
        properties to the person or object it was sent as)."""
        identities = self._identities(record)
        prefix = self.template.part_prefix(record, self.key_properties) if self.template.parts else None
        if prefix is not None and self.key_properties:  # add_tag keyed by its person: every tag of the key
            identities = [*identities, *self.ledger.identities_under(self.scope, prefix)]
        if not identities:
            return False
        self.flush()  # what came before it is stamped (and clears what was planned) before this plan
        known = self.ledger.lookup(self.scope, identities)
        gone = sorted(i for i, entry in known.items() if entry.fingerprint != EXISTS)
        if not gone:
            return False
        why = "the source marked it deleted (_sdc_deleted_at)"
        if self.writes:
            self.ledger.plan_removals(self.scope, [(identity, why) for identity in gone])
        else:
            self.snapshots.dry_planned.extend((identity, why) for identity in gone)
            self.snapshots.dry_seen.difference_update(gone)
        self.snapshots.planned = True
        return True

    def activated(self, version: t.Any) -> None:  # noqa: ANN401
        """The tap's ACTIVATE_VERSION: after records of the same version in this run, the tap says the snapshot
        is complete; else a snapshot starts (singer-sdk taps, and tap-mysql's first table, announce it first)."""
        self.flush()
        run = self.snapshots
        if run.current in run.fed and (str(version) == run.version or run.current in run.unversioned):
            if self.writes and run.current is not None:
                self.ledger.complete_snapshot(self.scope, run.current, "tap")
            run.completed.add(run.current)
            run.fed.discard(run.current)
            run.version, run.current = None, None
            return
        self._open(str(version))

    def end_of_input(self) -> None:
        """The input ended normally: each snapshot still open that had records completes 'end', unless the tap
        is one that closes its versions (then an open one is only unfinished; its records count for the next)."""
        self.flush()
        run = self.snapshots
        closing = self._closing()
        if self.writes and not closing:
            for snapshot_id in sorted(run.fed - run.unversioned):
                self.ledger.complete_snapshot(self.scope, snapshot_id, "end")

    def _closing(self) -> bool:
        mirror = self.ledger.mirror_of(self.scope)
        return bool(mirror and mirror[1]) or bool(self.snapshots.completed)

    def removals(self, max_share: float, confirmations: int, *, retry_failed: bool = True) -> Removals:
        """At the end of a normal run: what left the source, from the complete snapshots in the ledger, and the
        removals planned (`_sdc_deleted_at`, and those that failed and can pass when ``retry_failed``).

        With c_1 < ... < c_m the complete snapshots, an identity last seen in s (never: 0) is missing from c_j
        iff s <= c_(j-1) (a snapshot holds what every unfinished one since the last complete one saw); it is
        removed once missing from the last n: s <= c_(m-n), n = 1 when the tap completed c_m, else
        ``confirmations``. One held by another row of the destination is released (forgotten), not removed.
        Past ``max_share`` of what the target wrote for the scope, nothing is sent (:attr:`Removals.refusal`)."""
        run = self.snapshots
        closing = self._closing()
        complete = [s for s in self.ledger.completed_snapshots(self.scope) if not closing or s.completed_by == "tap"]
        ids = [s.id for s in complete]
        by = complete[-1].completed_by if complete else None
        if not self.writes and (run.completed or (run.fed and not closing)):  # a dry run: as if it completed
            ids, by = [*ids, 1 << 62], "tap" if run.completed else "end"
        need = 1 if by == "tap" else max(1, confirmations)
        seen_now = run.dry_seen if not self.writes else set()
        candidates: dict[str, Candidate] = {}
        waiting: list[tuple[str, str]] = []
        if ids and len(ids) >= need:
            upto = ids[len(ids) - need - 1] if len(ids) > need else 0
            why = (
                "not in the source's latest complete full table (ACTIVATE_VERSION after its records)"
                if need == 1
                else f"missing from the last {need} complete full tables (mirror_confirmations={confirmations})"
            )
            for identity, encharge_id in self.ledger.missing(self.scope, upto):
                if identity not in seen_now:
                    candidates[identity] = Candidate(identity, encharge_id, why)
        if ids and need > 1 and not self.writes:  # a dry run also says who waits for a confirmation
            after = ids[len(ids) - need - 1] if len(ids) > need else (0 if len(ids) >= need else -1)
            for identity, _ in self.ledger.missing(self.scope, ids[-2] if len(ids) > 1 else 0, after):
                if identity not in seen_now and identity not in candidates:
                    waiting.append(
                        (
                            identity,
                            f"missing from the latest complete full table; removed once missing from {need} in a row",
                        )
                    )
        planned = self.ledger.planned_removals(self.scope)
        if not self.writes:
            dry = {i: why for i, why in run.dry_planned}
            planned = [p for p in planned if p.identity not in seen_now]
            known = self.ledger.lookup(self.scope, list(dry))
            planned += [Candidate(i, known[i].encharge_id, why, planned=True) for i, why in dry.items() if i in known]
        for candidate in planned:
            if candidate.attempts == 0 or retry_failed:
                candidates[candidate.identity] = candidate
        if not candidates:
            return Removals([], waiting=waiting)
        kept, released = self._held_elsewhere(candidates)
        if released and self.writes:
            self.ledger.settle_removals(self.scope, released, planned_only=False)
        known_count = self.ledger.known_count(self.scope)
        if kept and len(kept) > max_share * known_count:
            share = len(kept) / known_count if known_count else 1.0
            refusal = (
                f"stream '{self.scope.stream}': mirror would remove {len(kept):,} of the {known_count:,} records "
                f"it wrote ({share:.0%}), more than max_delete_share={max_share:g} allows; nothing was removed "
                "(raise max_delete_share if the source really lost them)"
            )
            return Removals([], len(released), waiting, refusal)
        if self.writes:
            self.ledger.plan_removals(self.scope, [(c.identity, c.reason) for c in kept if not c.planned])
        plans = [self._plan(c.identity, c.encharge_id, c.reason) for c in kept]
        return Removals([p for p in plans if p is not None], len(released), waiting)

    def _held_elsewhere(self, candidates: dict[str, Candidate]) -> tuple[list[Candidate], list[str]]:
        """Candidates whose person or object another row of the account and destination still holds (another
        stream, or another identity of this one, as after a change of key properties), which is not itself a
        candidate: released. Returns those to remove and the identities released."""
        scope_id = self.ledger.scope_id(self.scope)
        named = {identity: self._named(c.encharge_id) for identity, c in candidates.items()}
        holders = self.ledger.holders(self.scope, [e for names in named.values() for e in names])
        kept: list[Candidate] = []
        released: list[str] = []
        for identity, candidate in sorted(candidates.items()):
            free = [
                name
                for name in named[identity]
                if not any(not (sid == scope_id and other in candidates) for sid, other in holders.get(name, set()))
            ]
            if named[identity] and not free:
                released.append(identity)
            elif len(free) < len(named[identity]):  # a row of joined tags (written before tags were single)
                person = (candidate.encharge_id or "").partition(" tag:")[0]
                tags = ",".join(name.partition(" tag:")[2] for name in free)
                kept.append(dataclasses.replace(candidate, encharge_id=f"{person} tag:{tags}"))
            else:
                kept.append(candidate)
        return kept, released

    def _named(self, encharge_id: str | None) -> list[str]:
        """The template identities a removal of ``encharge_id`` would touch: one, or for an add_tag row of
        joined tags (as the ledger held them before tags were single), one per tag."""
        if not encharge_id:
            return []
        person, joined, tags = encharge_id.partition(" tag:")
        if self.template.parts is None or not joined or "," not in tags:
            return [encharge_id]
        return [f"{person} tag:{tag}" for tag in single_tags({"tag": tags})]

    def _plan(self, identity: str, target: str | None, why: str) -> Planned | None:
        removal = self.template.removal
        ids = encharge_ids(target or identity)
        if removal is None or not ids:
            return None
        return Planned(identity, ids, removal(ids, self.delete_action), why)

    def removing(self, seq: int, plan: Planned) -> None:
        """The entry numbered ``seq`` carries ``plan``'s removal."""
        with self._lock:
            self._removing[seq] = plan.identity

    def removed_entries(self, entries: t.Iterable[Entry]) -> None:
        """Encharge removed these (2xx, or 404: already gone): the ledger forgets them, only where the removal
        is still planned (a re-insert delivered since wins)."""
        with self._lock:
            identities = [i for i in (self._removing.pop(e.seq, None) for e in entries) if i is not None]
        if self.writes and identities:
            self.ledger.settle_removals(self.scope, identities)

    def removal_failed(self, entries: t.Iterable[Entry], reason: str, *, retryable: bool) -> None:
        """A removal failed: for a reason that can pass it stays planned (sent again next run, shown by
        `status`); for good, it is no longer planned."""
        with self._lock:
            identities = [i for i in (self._removing.pop(e.seq, None) for e in entries) if i is not None]
        if not self.writes or not identities:
            return
        if retryable:
            for identity in identities:
                self.ledger.removal_failed(self.scope, identity, self.redact(reason))
        else:
            self.ledger.gave_up_removals(self.scope, identities)


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
        self.snapshots: dict[Scope, ScopeRun] = {}  # mirror: per scope, for the whole run (SCHEMA after SCHEMA)

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
            snapshots=self.snapshots.setdefault(scope, ScopeRun()) if mode == "mirror" else None,
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

    def mirrored(self) -> list[StreamSync]:
        """The streams of this run in `mirror` mode."""
        return [sync for sync in self.streams.values() if sync.mode == "mirror"]

    def flush(self) -> None:
        """Every mirrored stream's identities seen so far are in the ledger."""
        for sync in self.mirrored():
            sync.flush()

    def close(self) -> None:
        self.ledger.close()


def account_name(account_id: t.Any, url: str) -> str:  # noqa: ANN401
    """The ledger's name for an Encharge account: its id at the host it was reached on (so the sandbox, or
    another account, starts from nothing)."""
    return f"{account_id}@{urllib.parse.urlsplit(url).netloc.lower()}"
