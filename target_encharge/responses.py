"""What Encharge answered, as the run shows it: the response stream's schema and records
(`response_output: stream`), the key `response_output: state` adds to the tap's state, and the previews of a dry
run or a test send."""

from __future__ import annotations

import datetime
import typing as t

from target_encharge import encoding

if t.TYPE_CHECKING:
    from target_encharge.request import Outcome, Request

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


def preview(request: Request, headers: dict[str, str], outcome: Outcome | None = None) -> dict:
    """A request as a JSON-able dict (``headers`` with the key masked), with Encharge's full answer when sent."""
    body: t.Any = None
    if request.body is not None:  # JSON is shown parsed; NDJSON and form bodies as the text that is sent
        json_body = request.content_type == "application/json"
        body = encoding.loads(request.body) if json_body else request.body.decode("utf-8", "replace")
    shown = {
        "stream": request.stream,
        "endpoint": request.endpoint,
        "method": request.method,
        "url": request.url,
        "headers": headers,
        "body": body,
    }
    if request.note:
        shown["why"] = request.note
    if outcome is not None:
        answer_headers = {k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in outcome.headers.items()}
        shown["response"] = {
            "status": outcome.status,
            "success": outcome.ok,
            "headers": answer_headers,
            "body": outcome.body,
            "error": outcome.error,
            "attempts": outcome.attempts,
        }
    return shown


def response_record(request: Request, outcome: Outcome) -> dict:
    """One RECORD of the response stream."""
    return {
        "stream": request.stream,
        "endpoint": request.endpoint,
        "method": request.method,
        "url": request.url,
        "status_code": outcome.status,
        "success": outcome.ok,
        "attempts": outcome.attempts,
        "records": len(request.entries),
        "identifiers": _json_text([e.ids for e in request.entries]),
        "response": _json_text(outcome.body),
        "error": outcome.error,
        "time": now(),
        "duration_ms": round(outcome.seconds * 1000, 1),
    }
