"""Where a run's lines go, chosen from its settings: STATE, the response stream, dead letters and previews, each
a :class:`~target_encharge.jsonl.Lines` (or None when off); whatever goes to stdout shares one writer."""

from __future__ import annotations

import dataclasses
import typing as t

from target_encharge.jsonl import Lines
from target_encharge.responses import RESPONSE_SCHEMA, RESPONSE_STREAM, now, response_record
from target_encharge.settings import DEFAULT_DEAD_LETTER_PATH

if t.TYPE_CHECKING:
    from target_encharge.redaction import Redactor
    from target_encharge.request import Entry, Outcome, Request
    from target_encharge.settings import RunSettings


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
            responses = (
                stdout
                if settings.response_stream_path in (None, "-")
                else Lines(settings.response_stream_path, redact, "response_stream_path")
            )
        as_messages = responses is stdout  # stdout carries a Singer stream: the tap's state goes as STATE messages

        def emit_state(state: dict) -> None:
            stdout.write({"type": "STATE", "value": state} if as_messages else state)

        dead_letters = Lines(
            settings.dead_letter_path or DEFAULT_DEAD_LETTER_PATH,
            redact,
            "dead_letter_path",
            lazy=settings.dead_letter_path is None,
        )
        outputs = cls(
            state=None if looking else emit_state,
            summary_in_state=mode == "state",
            responses=responses,
            dead_letters=dead_letters,
            previews=lines(settings.preview_path, "preview_path", "stderr") if looking else None,
            sample_only=settings.test_send,
        )
        if outputs.responses is not None:
            outputs.responses.write(
                {"type": "SCHEMA", "stream": RESPONSE_STREAM, "schema": RESPONSE_SCHEMA, "key_properties": []}
            )
        return outputs

    def close(self) -> None:
        for lines in {id(x): x for x in (self.responses, self.dead_letters, self.previews) if x}.values():
            lines.close()

    def dead_letter(self, entry: Entry, reason: str, status: int | None, response: t.Any) -> None:  # noqa: ANN401
        if self.dead_letters is not None:
            self.dead_letters.write(
                {
                    "stream": entry.stream,
                    "identifiers": entry.ids,
                    "reason": reason,
                    "status": status,
                    "response": response,
                    "record": entry.record,
                    "time": now(),
                }
            )

    def response(self, request: Request, outcome: Outcome) -> None:
        if self.responses is not None:
            self.responses.write(
                {"type": "RECORD", "stream": RESPONSE_STREAM, "record": response_record(request, outcome)}
            )
