"""What comes of each record: numbered, counted, written out (previews, responses, dead letters), and settled,
which lets the STATE after it through the checkpoint's gate.

Delivery reports each request's outcome to :meth:`Results.on_result`; sinks report records refused before
sending to :meth:`Results.fail`. Thread-safe: workers report while the reader numbers new records.
"""

from __future__ import annotations

import logging
import typing as t

from target_encharge.checkpoint import RunCounts, StateGate
from target_encharge.outputs import SUMMARY_KEY, FailureLimit, FailureLog, Outputs, TestSendSample, preview
from target_encharge.request import Entry, Outcome, Request, Verdict, verdict

logger = logging.getLogger("target_encharge")


class Results:
    """Numbers records, counts outcomes, writes the outputs, and settles records so their STATE can go out."""

    def __init__(self, outputs: Outputs, limit: FailureLimit, masked_headers: t.Callable[[Request], dict]) -> None:
        self.out, self.limit, self.masked_headers = outputs, limit, masked_headers
        self.counts = RunCounts()
        self.gate = StateGate(self._emit)
        self.sample = TestSendSample(on=outputs.sample_only)
        self.failure_log = FailureLog()
        self._last_payload: dict | None = None  # what went out with the last STATE

    # records in

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled (a test send handles each stream's first only)."""
        if self.sample.admit(stream):
            return True
        self.counts.record_skipped()
        return False

    def entry(self, stream: str, record: dict, ids: dict) -> Entry:
        """A record numbered in input order and counted."""
        self.counts.record_seen(stream)
        return Entry(self.gate.number(), stream, record, ids)

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
        if judged in (Verdict.DELIVERED, Verdict.DRY_RUN):
            self.counts.succeeded(request.stream, len(request.entries))
            self.gate.done(*(e.seq for e in request.entries))
            return
        for entry in request.entries:
            self.fail(entry, outcome.error or f"HTTP {outcome.status}", outcome.status, outcome.body, sent=True)
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
