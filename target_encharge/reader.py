"""Reading Singer messages: msgspec's fast decoder, errors that name the line, blank lines skipped."""

from __future__ import annotations

import decimal
import io
import logging
import sys
import typing as t

import msgspec
from typing_extensions import override

from target_encharge.errors import InputError
from target_encharge.sdk import SeamReader

_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)
logger = logging.getLogger("target_encharge")

#: What each message type must carry, and as which JSON type, before the SDK may touch it.
_SHAPES: dict[str, dict[str, tuple[type, str]]] = {
    "RECORD": {"stream": (str, "a stream name"), "record": (dict, "a record object")},
    "SCHEMA": {"stream": (str, "a stream name"), "schema": (dict, "a schema object")},
    "STATE": {"value": (object, "a value")},
}


class Reader(SeamReader):
    """Reads stdin line by line; a line that is not a Singer message stops the run with its number."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0

    @property
    @override
    def default_input(self) -> t.IO[str]:  # type: ignore[override]
        """stdin as UTF-8 whatever the locale. Bytes that are not UTF-8 are kept (surrogateescape) so that the
        line holding them is refused with its number; a strict decoder would fail a whole chunk of input,
        lines before the bad one included."""
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")

    @override
    def deserialize_json(self, line: str) -> dict:
        self.line_number += 1
        if not line.strip():
            return {"type": "BLANK"}
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            msg = f"input line {self.line_number} is not valid JSON ({exc}); nothing after it was read"
            raise InputError(msg) from None
        except UnicodeError:
            msg = f"input line {self.line_number} is not UTF-8 text; nothing after it was read"
            raise InputError(msg) from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            msg = f"input line {self.line_number} is not a Singer message (no 'type'); nothing after it was read"
            raise InputError(msg)
        for field, (kind, what) in _SHAPES.get(message["type"], {}).items():
            if field not in message or (kind is not object and not isinstance(message[field], kind)):
                msg = (f"input line {self.line_number}: a {message['type']} message needs {what} in '{field}'; "
                       "nothing after it was read")
                raise InputError(msg)
        if message["type"] == "SCHEMA" and not isinstance(message["schema"].get("properties"), dict):
            msg = (f"input line {self.line_number}: the SCHEMA of stream '{message['stream']}' has no 'properties' "
                   "object; nothing after it was read")
            raise InputError(msg)
        return message

    @override
    def on_unknown_message(self, message: dict) -> None:
        if message["type"] != "BLANK":
            logger.warning("Ignoring input line %d: unknown message type %r", self.line_number, message["type"])
