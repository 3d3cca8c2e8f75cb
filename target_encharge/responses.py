"""What comes back: STATE once what came before it is done, the counts, dead letters, the response stream
and dry-run previews.

A record is done when Encharge answered 2xx for it or it failed for good (and went to the dead-letter file).
The :class:`Ledger` numbers records as they arrive and lets a STATE out only when every record before it is done.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import sys
import threading
import time
import typing as t

from target_encharge import encoding
from target_encharge.client import Call, Entry, Outcome, Redactor
from target_encharge.errors import TooManyFailures

logger = logging.getLogger("target_encharge")

SUMMARY_KEY = "target_encharge"  # the one key `response_output: state` adds to the tap's state
LAST_ERRORS = 5
RESPONSE_STREAM = "encharge_responses"
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "stream": {"type": "string"},
        "endpoint": {"type": "string"},
        "method": {"type": "string"},
        "url": {"type": "string"},
        "status_code": {"type": ["integer", "null"]},
        "success": {"type": "boolean"},
        "attempts": {"type": "integer"},
        "records": {"type": "integer"},
        "identifiers": {"type": "array", "items": {"type": "object"}},
        "response": {},
        "error": {"type": ["string", "null"]},
        "time": {"type": "string", "format": "date-time"},
        "duration_ms": {"type": "number"},
    },
}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class Lines:
    """A JSONL destination shared by threads: a file, or stdout for ``-``; every line passes redaction."""

    def __init__(self, path: str | None, redact: Redactor) -> None:
        self.redact = redact
        self._lock = threading.Lock()
        self._own = path not in (None, "-")
        self._file: t.IO[str] | None = open(path, "a", encoding="utf-8") if self._own else None  # noqa: SIM115

    def write(self, obj: t.Any) -> None:  # noqa: ANN401
        line = self.redact(encoding.dumps(obj).decode())
        out = self._file or sys.stdout  # looked up at each write: whoever captures stdout gets the lines
        with self._lock:
            out.write(line + "\n")
            out.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclasses.dataclass
class StreamCounts:
    """Per stream: records seen, calls made, records succeeded and failed, calls retried."""

    records: int = 0
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0


class Ledger:
    """Numbers records, counts outcomes, and lets each STATE out once every record before it is done."""

    def __init__(
        self,
        emit_state: t.Callable[[dict], None] | None,
        max_failures: int,
        dead_letters: Lines | None,
        responses: Lines | None,
        previews: Lines | None,
        client_headers: t.Callable[[Call], dict],
        summary_in_state: bool = False,
    ) -> None:
        self.emit_state, self.max_failures = emit_state, max_failures
        self.dead_letters, self.responses, self.previews = dead_letters, responses, previews
        self.client_headers = client_headers
        self.summary_in_state = summary_in_state
        self.counts: dict[str, StreamCounts] = collections.defaultdict(StreamCounts)
        self.errors: collections.deque[dict] = collections.deque(maxlen=LAST_ERRORS)
        self.failures = 0
        self._lock = threading.RLock()
        self._next_seq = 0
        self._done_below = 0  # every record numbered below this is done
        self._done_ahead: set[int] = set()
        self._states: collections.deque[tuple[int, dict]] = collections.deque()
        self._last_state: dict | None = None
        self._started = time.monotonic()
        if responses is not None:
            responses.write({"type": "SCHEMA", "stream": RESPONSE_STREAM, "schema": RESPONSE_SCHEMA,
                             "key_properties": []})

    # records in

    def number(self, stream: str) -> int:
        """The next record's place in the input."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            self.counts[stream].records += 1
            return seq

    def add_state(self, state: dict) -> None:
        """A STATE from the tap: it waits for every record that came before it."""
        with self._lock:
            if self._last_state == state:
                return
            self._last_state = state
            self._states.append((self._next_seq, state))
            self._release_states()

    # outcomes

    def result(self, call: Call, outcome: Outcome) -> None:
        """Count a sent (or, in a dry run, previewed) call and settle its records."""
        if self.previews is not None:
            self.previews.write(self.preview(call))
        with self._lock:
            counts = self.counts[call.stream]
            if outcome.attempts:
                counts.calls += 1
                counts.retried += outcome.attempts > 1
            if self.responses is not None and outcome.attempts:
                self.responses.write({"type": "RECORD", "stream": RESPONSE_STREAM,
                                      "record": self.response_record(call, outcome)})
            if outcome.ok or not outcome.attempts:
                counts.succeeded += len(call.entries)
                for entry in call.entries:
                    self._done(entry.seq)
                self._release_states()
                return
        for entry in call.entries:
            self.fail(entry, outcome.error or f"HTTP {outcome.status}", outcome.status, outcome.body)

    def fail(self, entry: Entry, reason: str, status: int | None = None, response: t.Any = None) -> None:  # noqa: ANN401
        """A record that failed for good: dead-lettered, logged by its identifiers, counted."""
        logger.error("Record of stream '%s' %s failed: %s", entry.stream, _describe(entry.ids), reason)
        if self.dead_letters is not None:
            self.dead_letters.write({"stream": entry.stream, "identifiers": entry.ids, "reason": reason,
                                     "status": status, "response": response, "record": entry.record,
                                     "time": _now()})
        with self._lock:
            self.counts[entry.stream].failed += 1
            self.failures += 1
            self.errors.append({"stream": entry.stream, "identifiers": entry.ids, "reason": reason[:300]})
            self._done(entry.seq)
            self._release_states()

    def check_failures(self) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        if self.max_failures >= 0 and self.failures > self.max_failures:
            where = "; see the dead-letter file" if self.dead_letters is not None else ""
            msg = (f"{self.failures} record(s) failed for good, more than max_failures={self.max_failures} "
                   f"allows{where}")
            raise TooManyFailures(msg)

    # what is written

    def preview(self, call: Call) -> dict:
        body: t.Any = None
        if call.body is not None:
            try:
                body = encoding.loads(call.body)
            except Exception:  # noqa: BLE001 - NDJSON and form bodies are shown as text
                body = call.body.decode("utf-8", "replace")
        return {"stream": call.stream, "endpoint": call.endpoint, "method": call.method, "url": call.url,
                "headers": self.client_headers(call), "body": body}

    def response_record(self, call: Call, outcome: Outcome) -> dict:
        return {"stream": call.stream, "endpoint": call.endpoint, "method": call.method, "url": call.url,
                "status_code": outcome.status, "success": outcome.ok, "attempts": outcome.attempts,
                "records": len(call.entries), "identifiers": [e.ids for e in call.entries],
                "response": outcome.body, "error": outcome.error, "time": _now(),
                "duration_ms": round(outcome.seconds * 1000, 1)}

    def summary(self) -> dict:
        """Bounded whatever the volume: counts per stream and the last few errors."""
        with self._lock:
            return {"streams": {s: dataclasses.asdict(c) for s, c in sorted(self.counts.items())},
                    "last_errors": list(self.errors)}

    def table(self) -> str:
        """The end-of-run summary, one line per stream."""
        rows = [("stream", "records", "calls", "succeeded", "failed", "retried")]
        rows += [(s, *map(str, dataclasses.astuple(c))) for s, c in sorted(self.counts.items())]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                         for r in rows)

    # internals

    def _done(self, seq: int) -> None:
        if seq == self._done_below:
            self._done_below += 1
            while self._done_below in self._done_ahead:
                self._done_ahead.discard(self._done_below)
                self._done_below += 1
        else:
            self._done_ahead.add(seq)

    def _release_states(self) -> None:
        """Every STATE whose records are all done goes out, in the order the tap sent them."""
        while self._states and self._states[0][0] <= self._done_below:
            ready = self._states.popleft()[1]
            if self.emit_state is not None:
                self.emit_state({**ready, SUMMARY_KEY: self.summary()} if self.summary_in_state else ready)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._next_seq - self._done_below


def _describe(ids: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in ids.items()) + ")" if ids else "(no identifiers)"
