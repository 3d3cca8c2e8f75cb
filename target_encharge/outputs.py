"""What the run writes besides STATE's gate: dead letters, the response stream, previews (dry run, test send),
the summary table and the progress line. Every line passes redaction; test-send sampling and ``max_failures``
each live here in one small class.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import sys
import threading
import time
import typing as t

from target_encharge import encoding
from target_encharge.errors import ConfigError, TooManyFailures

if t.TYPE_CHECKING:
    from target_encharge.checkpoint import RunCounts, StateGate
    from target_encharge.redaction import Redactor
    from target_encharge.request import Entry, Outcome, Request
    from target_encharge.settings import RunSettings

logger = logging.getLogger("target_encharge")

SUMMARY_KEY = "target_encharge"  # the one key `response_output: state` adds to the tap's state
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


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _json_text(value: t.Any) -> str | None:  # noqa: ANN401
    return None if value is None else encoding.dumps(value).decode()


def describe(ids: dict) -> str:
    """A record's identifiers for a log line."""
    return "(" + ", ".join(f"{k}={v}" for k, v in ids.items()) + ")" if ids else "(no identifiers)"


class Lines:
    """A JSONL destination shared by threads: a file (appended to), or stdout for ``-``; every line passes
    redaction. ``setting`` names the setting the path came from, for the error when it cannot be opened."""

    def __init__(self, path: str | None, redact: Redactor, setting: str = "") -> None:
        self.redact = redact
        self._lock = threading.Lock()
        self._file: t.IO[str] | None = None
        if path not in (None, "-"):
            try:
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
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

    @classmethod
    def for_run(cls, settings: RunSettings, redact: Redactor) -> Outputs:
        """The outputs a run's settings ask for; whatever goes to stdout shares one writer."""
        stdout = Lines("-", redact)

        def lines(path: str | None, setting: str) -> Lines:
            return stdout if path in (None, "-") else Lines(path, redact, setting)

        looking = settings.dry_run or settings.test_send  # nothing is loaded for good: no STATE, no responses
        mode = settings.response_output
        responses = lines(settings.response_stream_path, "response_stream_path") \
            if mode == "stream" and not looking else None
        as_messages = responses is stdout  # stdout carries a Singer stream: the tap's state goes as STATE messages

        def emit_state(state: dict) -> None:
            stdout.write({"type": "STATE", "value": state} if as_messages else state)

        outputs = cls(
            state=None if looking else emit_state,
            summary_in_state=mode == "state",
            responses=responses,
            dead_letters=lines(settings.dead_letter_path, "dead_letter_path") if settings.dead_letter_path else None,
            previews=lines(settings.preview_path, "preview_path") if looking else None,
            sample_only=settings.test_send,
        )
        if outputs.responses is not None:
            outputs.responses.write({"type": "SCHEMA", "stream": RESPONSE_STREAM, "schema": RESPONSE_SCHEMA,
                                     "key_properties": []})
        return outputs

    def close(self) -> None:
        for lines in {id(x): x for x in (self.responses, self.dead_letters, self.previews) if x}.values():
            lines.close()

    def dead_letter(self, entry: Entry, reason: str, status: int | None, response: t.Any) -> None:  # noqa: ANN401
        if self.dead_letters is not None:
            self.dead_letters.write({"stream": entry.stream, "identifiers": entry.ids, "reason": reason,
                                     "status": status, "response": response, "record": entry.record, "time": now()})

    def response(self, request: Request, outcome: Outcome) -> None:
        if self.responses is not None:
            self.responses.write({"type": "RECORD", "stream": RESPONSE_STREAM,
                                  "record": response_record(request, outcome)})


def preview(request: Request, headers: dict[str, str], outcome: Outcome | None = None) -> dict:
    """A request as a JSON-able dict (``headers`` with the key masked), with Encharge's full answer when sent."""
    body: t.Any = None
    if request.body is not None:  # JSON is shown parsed; NDJSON and form bodies as the text that is sent
        json_body = request.content_type == "application/json"
        body = encoding.loads(request.body) if json_body else request.body.decode("utf-8", "replace")
    shown = {"stream": request.stream, "endpoint": request.endpoint, "method": request.method, "url": request.url,
             "headers": headers, "body": body}
    if outcome is not None:
        answer_headers = {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in outcome.headers.items()}
        shown["response"] = {"status": outcome.status, "success": outcome.ok, "headers": answer_headers,
                             "body": outcome.body, "error": outcome.error, "attempts": outcome.attempts}
    return shown


def response_record(request: Request, outcome: Outcome) -> dict:
    """One RECORD of the response stream."""
    return {"stream": request.stream, "endpoint": request.endpoint, "method": request.method, "url": request.url,
            "status_code": outcome.status, "success": outcome.ok, "attempts": outcome.attempts,
            "records": len(request.entries), "identifiers": _json_text([e.ids for e in request.entries]),
            "response": _json_text(outcome.body), "error": outcome.error, "time": now(),
            "duration_ms": round(outcome.seconds * 1000, 1)}


class TestSendSample:
    """`test_send`: only the first record of each stream is sent (when on)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, *, on: bool) -> None:
        self.on = on
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled: always, but in a test send only each stream's first."""
        if not self.on:
            return True
        with self._lock:
            if stream in self._seen:
                return False
            self._seen.add(stream)
            return True


@dataclasses.dataclass(frozen=True)
class FailureLimit:
    """`max_failures`: how many records may fail for good before the run stops (-1: no limit)."""

    max_failures: int
    dead_letters: bool = False  # whether the stop can point at a dead-letter file

    def check(self, failures: int) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        if self.max_failures >= 0 and failures > self.max_failures:
            where = "; see the dead-letter file" if self.dead_letters else ""
            msg = f"{failures} record(s) failed for good, more than max_failures={self.max_failures} allows{where}"
            raise TooManyFailures(msg)


class Progress:
    """A log line every ``interval`` seconds on long runs: records handled, records per second, failures."""

    def __init__(self, counts: RunCounts, gate: StateGate, interval: float) -> None:
        self.counts, self.gate, self.interval = counts, gate, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="encharge-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        last_done, last_time = 0, time.monotonic()
        while not self._stop.wait(self.interval):
            done, failed = self.counts.handled()
            now_ = time.monotonic()
            rate = (done - last_done) / max(now_ - last_time, 1e-9)
            logger.info("Progress: %s records handled (%s/s), %s failed, %s in flight",
                        f"{done:,}", f"{rate:,.0f}", f"{failed:,}", f"{self.gate.pending:,}")
            last_done, last_time = done, now_


def summary_title(counts: RunCounts, *, dry_run: bool, test_send: bool) -> str:
    """The line above the summary table: totals, time and rate, and what kind of run it was."""
    done, failed = counts.handled()
    seconds = time.monotonic() - counts.started
    kind = " (dry run: nothing was sent)" if dry_run else ""
    if test_send:
        kind = f" (test send: the first record of each stream; {counts.skipped:,} other records not sent)"
    return (f"Summary{kind}: {done:,} records handled in {seconds:.1f}s ({done / max(seconds, 1e-9):,.0f}/s), "
            f"{failed:,} failed")
