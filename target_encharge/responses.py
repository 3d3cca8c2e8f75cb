"""What comes back: STATE once what came before it is done, the counts, progress, dead letters, the response
stream, dry-run previews and test-send answers.

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
from target_encharge.errors import ConfigError, TooManyFailures

logger = logging.getLogger("target_encharge")

SUMMARY_KEY = "target_encharge"  # the one key `response_output: state` adds to the tap's state
LAST_ERRORS = 5  # errors kept in the STATE summary
MAX_STREAMS_IN_STATE = 20  # streams named in the STATE summary; the others are counted together
MAX_TEXT = 200  # characters of a reason or an identifier kept in the STATE summary
RESPONSE_STREAM = "encharge_responses"
_JSON_TEXT = {"type": ["string", "null"], "description": "JSON text"}
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
        # JSON text, not nested types: every loader (CSV, a warehouse column, JSONL) keeps it as is
        "identifiers": _JSON_TEXT,
        "response": _JSON_TEXT,
        "error": {"type": ["string", "null"]},
        "time": {"type": "string", "format": "date-time"},
        "duration_ms": {"type": "number"},
    },
}
_SECRET_HEADERS = frozenset(("set-cookie", "authorization", "x-encharge-token"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _json_text(value: t.Any) -> str | None:  # noqa: ANN401
    return None if value is None else encoding.dumps(value).decode()


class Lines:
    """A JSONL destination shared by threads: a file (appended to), or stdout for ``-``; every line passes
    redaction. ``setting`` names the setting the path came from, for the error when it cannot be opened."""

    def __init__(self, path: str | None, redact: Redactor, setting: str = "") -> None:
        self.redact = redact
        self._lock = threading.Lock()
        self._file: t.IO[str] | None = None
        if path not in (None, "-"):
            try:
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                msg = f"{setting}: cannot write to {path!r} ({exc.strerror})"
                raise ConfigError(msg) from None

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
class Outputs:
    """Where what came back goes; None (or False) for each that is off."""

    state: t.Callable[[dict], None] | None = None  # STATE, once what came before it is done
    summary_in_state: bool = False  # `response_output: state`
    responses: Lines | None = None  # `response_output: stream`
    dead_letters: Lines | None = None
    previews: Lines | None = None  # dry run: each request; test send: each request and its full answer
    sample_only: bool = False  # test send: only the first record of each stream is sent


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

    def __init__(self, outputs: Outputs, max_failures: int, client_headers: t.Callable[[Call], dict]) -> None:
        self.out, self.max_failures, self.client_headers = outputs, max_failures, client_headers
        self.counts: dict[str, StreamCounts] = collections.defaultdict(StreamCounts)
        self.errors: collections.deque[dict] = collections.deque(maxlen=LAST_ERRORS)
        self.failures = 0
        self.skipped = 0  # test send: records not sent
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._next_seq = 0
        self._done_below = 0  # every record numbered below this is done
        self._done_ahead: set[int] = set()
        self._states: collections.deque[tuple[int, dict]] = collections.deque()
        self._last_state: dict | None = None
        self._last_emitted: dict | None = None  # the tap's last STATE that went out
        self._last_payload: dict | None = None  # and what went out with it
        self._sampled: set[str] = set()
        if outputs.responses is not None:
            outputs.responses.write({"type": "SCHEMA", "stream": RESPONSE_STREAM, "schema": RESPONSE_SCHEMA,
                                     "key_properties": []})

    # records in

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled: always, but in a test send only each stream's first."""
        if not self.out.sample_only:
            return True
        with self._lock:
            if stream in self._sampled:
                self.skipped += 1
                return False
            self._sampled.add(stream)
            return True

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

    def result(self, call: Call, outcome: Outcome, settle: bool = True) -> None:  # noqa: FBT001, FBT002
        """Count a sent (or, in a dry run, previewed) call and, unless it is a refused batch about to be split
        (``settle`` False), settle its records."""
        if self.out.previews is not None:
            self.out.previews.write(self.preview(call, outcome if outcome.attempts else None))
        with self._lock:
            counts = self.counts[call.stream]
            counts.calls += 1
            counts.retried += outcome.attempts > 1
            if self.out.responses is not None and outcome.attempts:
                self.out.responses.write({"type": "RECORD", "stream": RESPONSE_STREAM,
                                          "record": self.response_record(call, outcome)})
            if not settle:
                return
            if outcome.ok or not outcome.attempts:
                counts.succeeded += len(call.entries)
                for entry in call.entries:
                    self._done(entry.seq)
                self._release_states()
                return
        for entry in call.entries:
            self.fail(entry, outcome.error or f"HTTP {outcome.status}", outcome.status, outcome.body, sent=True)

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
        logged by its identifiers, counted."""
        logger.error("Record of stream '%s' %s failed: %s", entry.stream, _describe(entry.ids), reason)
        if self.out.dead_letters is not None:
            self.out.dead_letters.write({"stream": entry.stream, "identifiers": entry.ids, "reason": reason,
                                         "status": status, "response": response, "record": entry.record,
                                         "time": _now()})
        if self.out.previews is not None and not sent:  # refused before sending: say so beside the requests
            self.out.previews.write({"stream": entry.stream, "identifiers": entry.ids, "refused": reason})
        with self._lock:
            self.counts[entry.stream].failed += 1
            self.failures += 1
            self.errors.append({"stream": entry.stream, "identifiers": _short(entry.ids), "reason": reason[:MAX_TEXT]})
            self._done(entry.seq)
            self._release_states()

    def check_failures(self) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        if self.max_failures >= 0 and self.failures > self.max_failures:
            where = "; see the dead-letter file" if self.out.dead_letters is not None else ""
            msg = (f"{self.failures} record(s) failed for good, more than max_failures={self.max_failures} "
                   f"allows{where}")
            raise TooManyFailures(msg)

    def final_state(self) -> None:
        """At the end, `state` mode sends the tap's last STATE once more with the final counts."""
        with self._lock:
            if self.out.summary_in_state and self._last_emitted is not None and not self._states:
                self._emit(self._last_emitted)

    # what is written

    def preview(self, call: Call, outcome: Outcome | None = None) -> dict:
        """A request as a JSON-able dict (key masked), with Encharge's full answer when it was sent."""
        body: t.Any = None
        if call.body is not None:  # JSON is shown parsed; NDJSON and form bodies as the text that is sent
            json_body = call.content_type == "application/json"
            body = encoding.loads(call.body) if json_body else call.body.decode("utf-8", "replace")
        shown = {"stream": call.stream, "endpoint": call.endpoint, "method": call.method, "url": call.url,
                 "headers": self.client_headers(call), "body": body}
        if outcome is not None:
            headers = {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in outcome.headers.items()}
            shown["response"] = {"status": outcome.status, "success": outcome.ok, "headers": headers,
                                 "body": outcome.body, "error": outcome.error, "attempts": outcome.attempts}
        return shown

    def response_record(self, call: Call, outcome: Outcome) -> dict:
        return {"stream": call.stream, "endpoint": call.endpoint, "method": call.method, "url": call.url,
                "status_code": outcome.status, "success": outcome.ok, "attempts": outcome.attempts,
                "records": len(call.entries), "identifiers": _json_text([e.ids for e in call.entries]),
                "response": _json_text(outcome.body), "error": outcome.error, "time": _now(),
                "duration_ms": round(outcome.seconds * 1000, 1)}

    def summary(self) -> dict:
        """Bounded whatever the volume: counts for at most MAX_STREAMS_IN_STATE streams, the last few errors."""
        with self._lock:
            names = sorted(self.counts)
            shown = {s: dataclasses.asdict(self.counts[s]) for s in names[:MAX_STREAMS_IN_STATE]}
            summary: dict[str, t.Any] = {"streams": shown, "last_errors": list(self.errors)}
            if len(names) > MAX_STREAMS_IN_STATE:
                others = StreamCounts()
                for s in names[MAX_STREAMS_IN_STATE:]:
                    for field, value in dataclasses.asdict(self.counts[s]).items():
                        setattr(others, field, getattr(others, field) + value)
                summary["other_streams"] = {"streams": len(names) - MAX_STREAMS_IN_STATE,
                                            **dataclasses.asdict(others)}
            return summary

    def handled(self) -> tuple[int, int]:
        """(records done, of which failed) so far."""
        with self._lock:
            return sum(c.succeeded + c.failed for c in self.counts.values()), self.failures

    def table(self) -> str:
        """The end-of-run summary, one line per stream (and their total)."""
        rows = [("stream", "records", "calls", "succeeded", "failed", "retried")]
        with self._lock:
            counts = sorted(self.counts.items())
        rows += [(s, *(f"{n:,}" for n in dataclasses.astuple(c))) for s, c in counts]
        if len(counts) > 1:
            rows.append(("total", *(f"{sum(col):,}" for col in zip(*(dataclasses.astuple(c) for _, c in counts)))))
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
            self._emit(self._states.popleft()[1])

    def _emit(self, state: dict) -> None:
        payload = {**state, SUMMARY_KEY: self.summary()} if self.out.summary_in_state else state
        if self.out.state is not None and payload != self._last_payload:
            self.out.state(payload)
        self._last_emitted, self._last_payload = state, payload

    @property
    def pending(self) -> int:
        with self._lock:
            return self._next_seq - self._done_below


class Progress:
    """A log line every ``interval`` seconds on long runs: records handled, records per second, failures."""

    def __init__(self, ledger: Ledger, interval: float) -> None:
        self.ledger, self.interval = ledger, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="encharge-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        last_done, last_time = 0, time.monotonic()
        while not self._stop.wait(self.interval):
            done, failed = self.ledger.handled()
            now = time.monotonic()
            rate = (done - last_done) / max(now - last_time, 1e-9)
            logger.info("Progress: %s records handled (%s/s), %s failed, %s in flight",
                        f"{done:,}", f"{rate:,.0f}", f"{failed:,}", f"{self.ledger.pending:,}")
            last_done, last_time = done, now


def summary_title(ledger: Ledger, *, dry_run: bool) -> str:
    """The line above the summary table: totals, time and rate, and what kind of run it was."""
    done, failed = ledger.handled()
    seconds = time.monotonic() - ledger.started
    kind = " (dry run: nothing was sent)" if dry_run else ""
    if ledger.out.sample_only:
        kind = f" (test send: the first record of each stream; {ledger.skipped:,} other records not sent)"
    return (f"Summary{kind}: {done:,} records handled in {seconds:.1f}s ({done / max(seconds, 1e-9):,.0f}/s), "
            f"{failed:,} failed")


def _short(ids: dict) -> dict:
    return {str(k)[:MAX_TEXT]: str(v)[:MAX_TEXT] for k, v in list(ids.items())[:5]}


def _describe(ids: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in ids.items()) + ")" if ids else "(no identifiers)"


def outputs_for(config: t.Mapping[str, t.Any], redact: Redactor) -> Outputs:
    """The outputs a run's settings ask for; whatever goes to stdout shares one writer."""
    stdout = Lines("-", redact)

    def lines(setting: str) -> Lines:
        path = config.get(setting)
        return stdout if path in (None, "-") else Lines(path, redact, setting)

    dry_run, test_send = bool(config.get("dry_run")), bool(config.get("test_send"))
    looking = dry_run or test_send  # nothing is loaded for good: no STATE, no response stream
    mode = config.get("response_output") or "none"
    responses = lines("response_stream_path") if mode == "stream" and not looking else None
    as_messages = responses is stdout  # stdout carries a Singer stream: the tap's state goes as STATE messages

    def emit_state(state: dict) -> None:
        stdout.write({"type": "STATE", "value": state} if as_messages else state)

    return Outputs(
        state=None if looking else emit_state,
        summary_in_state=mode == "state",
        responses=responses,
        dead_letters=lines("dead_letter_path") if config.get("dead_letter_path") else None,
        previews=lines("preview_path") if looking else None,
        sample_only=test_send,
    )
