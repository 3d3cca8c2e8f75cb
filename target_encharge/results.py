"""What comes of each record: numbered, counted, written out (previews, responses, dead letters), and settled,
which lets the STATE after it through the checkpoint's gate. Every outcome settles here, and only here: a record
refused before sending (:meth:`Results.refuse`), left unsent by the sync ledger (:meth:`Results.unsent`), and
each answer to a request (:meth:`Results.on_result`: a 2xx, a removal, a failure for good, a failure kept for
the next run), as :meth:`Request.verdict <target_encharge.request.Request.verdict>` reads it.

Thread-safe: workers report while the reader numbers new records.
"""

from __future__ import annotations

import logging
import typing as t

from target_encharge.checkpoint import StateGate
from target_encharge.counts import RunCounts
from target_encharge.failures import FailureLimit, FailureLog
from target_encharge.outputs import Outputs
from target_encharge.request import Entry, Outcome, Request
from target_encharge.responses import SUMMARY_KEY, preview
from target_encharge.sampling import TestSendSample
from target_encharge.verdicts import Verdict

if t.TYPE_CHECKING:
    from target_encharge.sync import StreamSync, Sync

logger = logging.getLogger("target_encharge")


class Results:
    """Numbers records, counts outcomes, writes the outputs, and settles records so their STATE can go out."""

    def __init__(self, outputs: Outputs, limit: FailureLimit, masked_headers: t.Callable[[Request], dict]) -> None:
        self.out, self.limit, self.masked_headers = outputs, limit, masked_headers
        self.counts = RunCounts()
        self.gate = StateGate(self._emit)
        self.sample = TestSendSample(on=outputs.sample_only)
        self.failure_log = FailureLog()
        self.sync: Sync | None = None  # the sync ledger, told what was delivered and what failed
        self.learn: t.Callable[[Request, Outcome], None] | None = None  # Encharge ids from answers (issue 24)
        self.later: list[Request] = []  # requests whose person was not there yet (tags): tried again at the end
        self._retried_later: set[int] = set()  # entries already tried again once
        self._last_payload: dict | None = None  # what went out with the last STATE
        self.on_failure: t.Callable[[str, dict, str], None] | None = None  # (stream, ids, reason): the run's report

    # records in

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled (a test send handles each stream's first only)."""
        if self.sample.admit(stream):
            return True
        self.counts.record_skipped()
        return False

    def entry(self, stream: str, record: dict, ids: dict, *, counted: bool = True) -> Entry:
        """A record numbered in input order and (unless it is a removal mirror makes) counted."""
        if counted:
            self.counts.record_seen(stream)
        return Entry(self.gate.number(), stream, record, ids)

    def unsent(self, stream: str, entries: t.Sequence[Entry], why: str) -> None:
        """Records the sync ledger says not to send (``why``: unchanged, or skipped by the sync mode): done."""
        self.counts.add(stream, why, len(entries))
        self.gate.done(*(e.seq for e in entries))

    def deleted_kept(self, stream: str) -> None:
        """A record the tap marks deleted in a mode that removes nothing: never upserted back (skipped)."""
        self.counts.record_seen(stream)
        self.counts.add(stream, "skipped")

    def sent_again(self, stream: str) -> None:
        """A record that failed in an earlier run, sent again before the stream's own."""
        self.counts.add(stream, "retried_from_earlier_runs")

    def add_state(self, state: dict) -> None:
        """A STATE from the tap: out once every record before it is done."""
        self.gate.add_state(state)

    # outcomes

    def on_result(self, request: Request, outcome: Outcome, *, settle: bool = True) -> None:
        """Count a sent (or, in a dry run, previewed) request and, unless it is a refused batch about to be split
        (``settle`` False), settle its records."""
        judged = request.verdict(outcome)
        sent = judged is not Verdict.DRY_RUN
        if self.out.previews is not None:
            self.out.previews.write(preview(request, self.masked_headers(request), outcome if sent else None))
        self.counts.call_made(request.stream, retried=outcome.attempts > 1)
        if sent:
            self.out.response(request, outcome)
        if not settle:
            return
        sync = self.sync.of(request.stream, request.entries) if self.sync is not None else None
        if request.removal and judged in (Verdict.DELIVERED, Verdict.ABSENT):  # ABSENT: already gone
            if sync is not None:
                sync.removed_entries(request.entries)
            self.counts.add(request.stream, "removed", len(request.entries))
            self.gate.done(*(e.seq for e in request.entries))
            return
        if self.learn is not None and sent:
            self.learn(request, outcome)
        if judged in (Verdict.DELIVERED, Verdict.DRY_RUN):
            self.counts.succeeded(request.stream, len(request.entries))
            if judged is Verdict.DELIVERED and sync is not None:
                marks = [mark for mark in sync.delivered(request.entries) if mark is not None]
                updated = sum(mark.known for mark in marks)
                for kind, count in (("updated", updated), ("created", len(marks) - updated)):
                    if count:
                        self.counts.add(request.stream, kind, count)
            self.gate.done(*(e.seq for e in request.entries))
            return
        not_yet = judged is Verdict.LATER
        if not_yet and not self._retried_later.intersection(e.seq for e in request.entries):
            self.later.append(request)  # its person may be created by a stream later in the run
            return
        reason = outcome.error or f"HTTP {outcome.status}"
        if request.removal and sync is not None:  # kept planned when it can pass, sent again next run
            sync.removal_failed(request.entries, reason, retryable=judged is Verdict.RETRY or not_yet)
        self._failed(
            sync if not request.removal else None,
            request.entries,
            reason,
            outcome.status,
            outcome.body,
            retryable=judged is Verdict.RETRY or not_yet,
            sent=True,
        )

    def refuse(self, entry: Entry, problem: str) -> None:
        """A record refused before sending (``problem``: why it cannot be sent): failed for good, in the ledger
        too (sending it again cannot pass)."""
        sync = self.sync.of(entry.stream, (entry,)) if self.sync is not None else None
        self._failed(sync, (entry,), f"refused before sending: {problem}", None, None, retryable=False)

    def not_there(self, entry: Entry, problem: str) -> None:
        """A record that names a person or object Encharge does not have (an association's side, at the end of
        the run): failed, and sent again next run (the person may come then)."""
        sync = self.sync.of(entry.stream) if self.sync is not None else None
        self._failed(sync, (entry,), problem, None, None, retryable=True)

    def _failed(
        self,
        sync: StreamSync | None,
        entries: t.Sequence[Entry],
        reason: str,
        status: int | None,
        response: t.Any,  # noqa: ANN401
        *,
        retryable: bool,
        sent: bool = False,
    ) -> None:
        """Records that failed in this run: the stream's ledger (``sync``; None for a removal's) keeps them, to
        send again next run when ``retryable``; each fails for good here; the failure limit is checked."""
        if sync is not None:
            sync.failed(entries, reason, status, retryable=retryable)
        for entry in entries:
            self._fail(entry, reason, status, response, sent=sent)
        self.enforce_failure_limit()  # as they happen: sending stops once Encharge refused more than allowed

    def _fail(
        self,
        entry: Entry,
        reason: str,
        status: int | None = None,
        response: t.Any = None,  # noqa: ANN401
        *,
        sent: bool = False,
    ) -> None:
        """A record that failed for good (or, unless ``sent``, was refused before sending): dead-lettered,
        logged by its identifiers, counted, settled."""
        self.out.dead_letter(entry, reason, status, response)
        self.failure_log.failed(entry.stream, entry.ids, reason)
        if self.on_failure is not None:
            self.on_failure(entry.stream, entry.ids, reason)
        if self.out.previews is not None and not sent:  # refused before sending: say so beside the requests
            self.out.previews.write({"stream": entry.stream, "identifiers": entry.ids, "refused": reason})
        self.counts.failed(entry.stream, entry.ids, reason)
        self.gate.done(entry.seq)

    def take_later(self) -> list[Request]:
        """The tag requests whose person was not there: once more, now that every stream was delivered."""
        later, self.later = self.later, []
        for request in later:
            self._retried_later.update(e.seq for e in request.entries)
        return later

    def enforce_failure_limit(self) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        self.limit.enforce(self.counts.failures)

    def final_state(self) -> None:
        """At the end, `state` mode sends the tap's last STATE once more with the final counts."""
        if self.out.summary_in_state:
            self.gate.release_again()

    def _emit(self, state: dict) -> None:
        payload = {**state, SUMMARY_KEY: self.counts.summary()} if self.out.summary_in_state else state
        if self.out.state is not None and payload != self._last_payload:
            self.out.state(payload)
        self._last_payload = payload
