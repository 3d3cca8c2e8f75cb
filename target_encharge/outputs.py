"""What the run writes besides STATE's gate: dead letters, the response stream, previews (dry run, test send),
the summary table and the progress line. Every line passes redaction; test-send sampling and ``max_failures``
each live here in one small class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import os
import re
import sys
import threading
import time
import typing as t

from target_encharge import encoding
from target_encharge.errors import OutputError, TooManyFailures
from target_encharge.settings import DEFAULT_DEAD_LETTER_PATH

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
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
STANDARD_STREAMS = ("stdout", "stderr")
MAX_REASONS_COUNTED = 1000  # distinct failure reasons logged once with a count; beyond, each is logged


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _json_text(value: t.Any) -> str | None:  # noqa: ANN401
    return None if value is None else encoding.dumps(value).decode()


def describe(ids: dict) -> str:
    """A record's identifiers for a log line."""
    return "(" + ", ".join(f"{k}={v}" for k, v in ids.items()) + ")" if ids else "(no identifiers)"


def ascii_json(text: str) -> str:
    """JSON text with every non-ASCII character written as a JSON escape: the same value, for a stdout whose
    encoding cannot carry UTF-8 (``PYTHONIOENCODING=ascii``). Outside strings JSON has no such characters."""
    return _NON_ASCII.sub(lambda m: json.dumps(m.group())[1:-1], text)


class Lines:
    """A JSONL destination shared by threads: a file (appended to), or ``stdout``/``stderr``; every value is
    masked before it is serialised. ``setting`` names the setting the path came from, for errors; ``lazy``
    files are created when a first line is written (the default dead-letter file)."""

    def __init__(self, path: str, redact: Redactor, setting: str = "", *, lazy: bool = False) -> None:
        self.path, self.redact, self.setting = path, redact, setting
        self.written = 0
        self._lock = threading.Lock()
        self._file: t.BinaryIO | None = None
        if path not in STANDARD_STREAMS and not lazy:
            self._open()

    @property
    def shown_path(self) -> str:
        return self.path if self.path in STANDARD_STREAMS else os.path.abspath(self.path)

    def _open(self) -> t.BinaryIO:
        if self._file is None:
            try:
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
                if self._file.seek(0, os.SEEK_END) and _ends_mid_line(self.path):
                    self._file.write(b"\n")  # an earlier run stopped mid-line: start on a clean one
            except OSError as exc:
                msg = f"{self.setting}: cannot write to {self.shown_path!r} ({exc.strerror})"
                raise OutputError(msg) from None
        return self._file

    def write(self, obj: t.Any) -> None:  # noqa: ANN401
        text = encoding.dumps(obj).decode()
        if self.redact.finds(text):  # masked in the values, then serialised again: the line stays valid JSON
            text = self.redact(encoding.dumps(self.redact.value(obj)).decode())
        line = text + "\n"
        with self._lock:
            if self.path == "stdout":
                _write_stdout(line)
            elif self.path == "stderr":
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                self._append(line.encode())
            self.written += 1

    def _append(self, data: bytes) -> None:
        """One whole line or nothing: a write cut short (a full disk) is taken back."""
        file = self._open()
        start = file.seek(0, os.SEEK_END)
        try:
            if file.write(data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                file.truncate(start)
            msg = (f"{self.setting}: cannot write to {self.shown_path!r} ({exc.strerror}); the record is not "
                   "settled, so its STATE was not written")
            raise OutputError(msg) from None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()


def _ends_mid_line(path: str) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def _write_stdout(line: str) -> None:
    """A line on stdout (looked up at each write: whoever captures stdout gets it); escaped to ASCII when its
    encoding cannot carry the text; a reader that closed stdout is a reason to stop, told in one line."""
    out = sys.stdout
    try:
        try:
            out.write(line)
        except UnicodeEncodeError:  # nothing was written: the text is encoded whole first
            out.write(ascii_json(line))
        out.flush()
    except (BrokenPipeError, ValueError, OSError) as exc:
        if isinstance(exc, ValueError) and not out.closed:
            raise
        with contextlib.suppress(OSError, ValueError):  # Python's flush at exit must not complain again
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        msg = "stdout was closed by the reader (a `| head`, or the next step of the pipeline stopped); STATE " \
              "written so far is safe, the rest of the input was not handled"
        raise OutputError(msg) from None


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
        """The outputs a run's settings ask for; whatever goes to stdout shares one writer. Previews never go to
        stdout (it carries only Singer messages); dead letters always go to a file, the default one if unset."""
        stdout = Lines("stdout", redact)

        def lines(path: str | None, setting: str, standard: str) -> Lines:
            return Lines(standard, redact) if path in (None, "-") else Lines(path, redact, setting)

        looking = settings.dry_run or settings.test_send  # nothing is loaded for good: no STATE, no responses
        mode = settings.response_output
        responses = None
        if mode == "stream" and not looking:
            responses = stdout if settings.response_stream_path in (None, "-") else \
                Lines(settings.response_stream_path, redact, "response_stream_path")
        as_messages = responses is stdout  # stdout carries a Singer stream: the tap's state goes as STATE messages

        def emit_state(state: dict) -> None:
            stdout.write({"type": "STATE", "value": state} if as_messages else state)

        dead_letters = Lines(settings.dead_letter_path or DEFAULT_DEAD_LETTER_PATH, redact, "dead_letter_path",
                             lazy=settings.dead_letter_path is None)
        outputs = cls(
            state=None if looking else emit_state,
            summary_in_state=mode == "state",
            responses=responses,
            dead_letters=dead_letters,
            previews=lines(settings.preview_path, "preview_path", "stderr") if looking else None,
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
    if request.note:
        shown["why"] = request.note
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
    dead_letter_path: str | None = None  # the file the reason to stop points at

    def check(self, failures: int) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        if self.max_failures >= 0 and failures > self.max_failures:
            where = f"; see the dead-letter file {self.dead_letter_path}" if self.dead_letter_path else ""
            msg = f"{failures} record(s) failed for good, more than max_failures={self.max_failures} allows{where}"
            raise TooManyFailures(msg)


class FailureLog:
    """Failed records in the log: the first of each reason (per stream) in full, the others like it counted and
    told once at the end ("and 4,990 more like this"), not one line each."""

    def __init__(self) -> None:
        self._repeats: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def failed(self, stream: str, ids: dict, reason: str) -> None:
        with self._lock:
            repeats = self._repeats.get((stream, reason))
            if repeats is not None:
                self._repeats[stream, reason] = repeats + 1
                return
            if len(self._repeats) < MAX_REASONS_COUNTED:
                self._repeats[stream, reason] = 0
        logger.error("Record of stream '%s' %s failed: %s", stream, describe(ids), reason)

    def close(self) -> None:
        """The count of each repeated failure, once."""
        with self._lock:
            repeats, self._repeats = self._repeats, {}
        for (stream, reason), count in repeats.items():
            if count:
                logger.error("... and %s more record(s) of stream '%s' like this: %s", f"{count:,}", stream, reason)


class Progress:
    """A log line every ``interval`` seconds on long runs: records handled, records per second, failures, records
    waiting (read, not yet done) and calls in flight."""

    def __init__(self, counts: RunCounts, gate: StateGate, interval: float,
                 calls_in_flight: t.Callable[[], int] = lambda: 0) -> None:
        self.counts, self.gate, self.interval, self.calls_in_flight = counts, gate, interval, calls_in_flight
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
            logger.info("Progress: %s records handled (%s/s), %s failed, %s records waiting, %s calls in flight",
                        f"{done:,}", f"{rate:,.0f}", f"{failed:,}", f"{self.gate.pending:,}",
                        f"{self.calls_in_flight():,}")
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


def dead_letter_line(dead_letters: Lines | None) -> str | None:
    """The summary's pointer to the dead-letter file, when records went there."""
    if dead_letters is None or not dead_letters.written:
        return None
    return f"{dead_letters.written:,} failed record(s) kept in the dead-letter file {dead_letters.shown_path}"
