"""What comes of each record: numbered, counted, written out (previews, responses, dead letters), and settled,
which lets the STATE after it through the checkpoint's gate.

Delivery reports each request's outcome to :meth:`Results.on_result`; sinks report records refused before
sending to :meth:`Results.fail`. Thread-safe: workers report while the reader numbers new records.
"""

from __future__ import annotations

import logging
import typing as t

from target_encharge.checkpoint import StateGate
from target_encharge.counts import RunCounts
from target_encharge.failures import FailureLimit, FailureLog
from target_encharge.outputs import Outputs
from target_encharge.request import Entry, Outcome, Request, Verdict, verdict
from target_encharge.responses import SUMMARY_KEY, preview
from target_encharge.sampling import TestSendSample

if t.TYPE_CHECKING:
    from target_encharge.sync import Sync

NOT_FOUND = 404
TAGGING = ("add_tag", "remove_tag")  # a tag's person may come later in the run (another stream)

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
        self.later: list[Request] = []  # tags whose person was not there yet: tried again at the end
        self._retried_later: set[int] = set()  # entries already tried again once
        self._last_payload: dict | None = None  # what went out with the last STATE

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

    def add_state(self, state: dict) -> None:
        """A STATE from the tap: out once every record before it is done."""
        self.gate.add_state(state)

    # outcomes

    def on_result(self, request: Request, outcome: Outcome, *, settle: bool = True) -> None:
        """Count a sent (or, in a dry run, previewed) request and, unless it is a refused batch about to be split
        (``settle`` False), settle its records."""
        judged = verdict(outcome)
        sent = judged is not Verdict.DRY_RUN
        if self.out.previews is not None:
            self.out.previews.write(preview(request, self.masked_headers(request), outcome if sent else None))
        self.counts.call_made(request.stream, retried=outcome.attempts > 1)
        if sent:
            self.out.response(request, outcome)
        if not settle:
            return
        sync = self.sync.of(request.stream) if self.sync is not None else None
        if request.removal and (judged is Verdict.DELIVERED or outcome.status == NOT_FOUND):  # 404: already gone
            if sync is not None:
                sync.removed_entries(request.entries)
            self.counts.add(request.stream, "removed", len(request.entries))
            self.gate.done(*(e.seq for e in request.entries))
            return
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
        no_person_yet = request.endpoint in TAGGING and outcome.status == NOT_FOUND and not request.removal
        if no_person_yet and not self._retried_later.intersection(e.seq for e in request.entries):
            self.later.append(request)  # its person may be created by a stream later in the run
            return
        reason = outcome.error or f"HTTP {outcome.status}"
        retryable = judged is Verdict.RETRY or no_person_yet
        if sync is not None and not request.removal:
            sync.failed(request.entries, reason, outcome.status, retryable=retryable)
        for entry in request.entries:
            self.fail(entry, reason, outcome.status, outcome.body, sent=True)
        self.check_failures()  # as they happen: sending stops once Encharge refused more than allowed

    def fail(
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

    def check_failures(self) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        self.limit.check(self.counts.failures)

    def final_state(self) -> None:
        """At the end, `state` mode sends the tap's last STATE once more with the final counts."""
        if self.out.summary_in_state:
            self.gate.release_again()

    def _emit(self, state: dict) -> None:
        payload = {**state, SUMMARY_KEY: self.counts.summary()} if self.out.summary_in_state else state
        if self.out.state is not None and payload != self._last_payload:
            self.out.state(payload)
        self._last_payload = payload
