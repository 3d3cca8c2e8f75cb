"""Reading Singer messages: msgspec's fast decoder, errors that name the line, blank lines skipped."""

from __future__ import annotations

import decimal
import logging

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader

from target_encharge.errors import InputError

_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)
logger = logging.getLogger("target_encharge")


class Reader(MsgSpecReader):
    """Reads stdin line by line; a line that is not a Singer message stops the run with its number."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0

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
        if not isinstance(message, dict) or "type" not in message:
            msg = f"input line {self.line_number} is not a Singer message (no 'type'); nothing after it was read"
            raise InputError(msg)
        return message

    def _process_unknown_message(self, message_dict: dict) -> None:
        if message_dict["type"] != "BLANK":
            logger.warning("Ignoring input line %d: unknown message type %r", self.line_number, message_dict["type"])
