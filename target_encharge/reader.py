"""Reading Singer messages: msgspec's fast decoder, errors that name the line, blank lines skipped."""

from __future__ import annotations

import decimal
import io
import logging
import signal
import sys
import typing as t

import msgspec
from typing_extensions import override

from target_encharge.errors import EnchargeTargetError, InputError
from target_encharge.sdk import SeamReader

_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)
logger = logging.getLogger("target_encharge")

#: What each message type must carry, and as which JSON type, before the SDK may touch it.
_SHAPES: dict[str, dict[str, tuple[type, str]]] = {
    "RECORD": {"stream": (str, "a stream name"), "record": (dict, "a record object")},
    "SCHEMA": {"stream": (str, "a stream name"), "schema": (dict, "a schema object")},
    "STATE": {"value": (object, "a value")},
}


class Interrupted(EnchargeTargetError):  # noqa: N818 - says what happened, as the other errors do
    """SIGTERM or SIGINT: stop reading, finish what was read within the grace period, exit 128 + the signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        name = {int(signal.SIGINT): "SIGINT", int(signal.SIGTERM): "SIGTERM"}.get(signum, f"signal {signum}")
        super().__init__(f"stopped by {name}; what was read before it was finished")


class Reader(SeamReader):
    """Reads stdin line by line; a line that is not a Singer message stops the run with its number."""

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.stream: t.Any = None  # the stream of the message read last
        self.version: t.Any = None  # the `version` of the RECORD read last (mirror's snapshot; issue 22)
        self.stop_signal: int | None = None  # set by a signal handler: read no further line
        self.waiting = False  # blocked waiting for the next line (a signal then interrupts the wait)

    @override
    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        return super().process_lines(t.cast("t.IO[str]", self._lines(file_input or self.default_input)), callbacks)

    def stop(self, signum: int) -> None:
        """Read no further line. Called from a signal handler: only sets flags, or, when the reader is blocked
        waiting for input, raises into that wait (nothing is held there)."""
        self.stop_signal = signum
        if self.waiting:
            self.waiting = False
            raise Interrupted(signum)

    def _lines(self, source: t.Iterable[str]) -> t.Iterator[str]:
        """The input's lines, a UTF-8 byte order mark at its start skipped; stops once a signal came."""
        lines = iter(source)
        first = True
        while True:
            if self.stop_signal is not None:
                raise Interrupted(self.stop_signal)
            self.waiting = True
            try:
                line = next(lines, None)
            finally:
                self.waiting = False
            if line is None:
                return
            if first:
                line, first = line.removeprefix("\ufeff"), False
            yield line

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
        if not line or line.isspace():
            return {"type": "BLANK"}
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            msg = f"input line {self.line_number} is not valid JSON ({exc}); nothing after it was read"
            raise InputError(msg) from None
        except UnicodeError:
            msg = f"input line {self.line_number} is not UTF-8 text; nothing after it was read"
            raise InputError(msg) from None
        if (
            type(message) is dict
            and message.get("type") == "RECORD"
            and type(message.get("stream")) is str
            and type(message.get("record")) is dict
        ):  # most lines: a well-formed RECORD, checked at once
            self.stream = message["stream"]
            self.version = message.get("version")
            return message
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            msg = f"input line {self.line_number} is not a Singer message (no 'type'); nothing after it was read"
            raise InputError(msg)
        for field, (kind, what) in _SHAPES.get(message["type"], {}).items():
            if field not in message or (kind is not object and not isinstance(message[field], kind)):
                msg = (
                    f"input line {self.line_number}: a {message['type']} message needs {what} in '{field}'; "
                    "nothing after it was read"
                )
                raise InputError(msg)
        if message["type"] == "SCHEMA":
            self._check_schema(message)
        self.stream = message.get("stream")
        return message

    def _check_schema(self, message: dict) -> None:
        """A SCHEMA the SDK can use: a 'properties' object of objects, key properties as a list of names."""
        where = f"input line {self.line_number}: the SCHEMA of stream '{message['stream']}'"
        properties = message["schema"].get("properties")
        if not isinstance(properties, dict):
            msg = f"{where} has no 'properties' object; nothing after it was read"
            raise InputError(msg)
        for name, spec in properties.items():
            if not isinstance(spec, dict):
                msg = f"{where}: property '{name}' is {spec!r}, not a schema object; nothing after it was read"
                raise InputError(msg)
        keys = message.get("key_properties")
        if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
            msg = (
                f'{where}: key_properties must be a list of property names (such as ["email"]), '
                f"not {keys!r}; nothing after it was read"
            )
            raise InputError(msg)

    @override
    def on_unknown_message(self, message: dict) -> None:
        if message["type"] != "BLANK":
            logger.warning("Ignoring input line %d: unknown message type %r", self.line_number, message["type"])
