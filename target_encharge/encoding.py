"""JSON in and out, in one place: dates as ISO 8601 strings, Decimals as plain JSON numbers."""

from __future__ import annotations

import datetime
import typing as t

import msgspec


def _fallback(obj: t.Any) -> t.Any:  # noqa: ANN401
    """Types msgspec does not know natively: sets become lists, anything else its string form."""
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, datetime.time):
        return obj.isoformat()
    return str(obj)


_encoder = msgspec.json.Encoder(enc_hook=_fallback, decimal_format="number")
_decoder = msgspec.json.Decoder()


def dumps(obj: t.Any) -> bytes:  # noqa: ANN401
    """Encode ``obj`` as compact JSON bytes (datetime, date and Decimal included)."""
    return _encoder.encode(obj)


def dumps_lines(objs: t.Iterable[t.Any]) -> bytes:
    """Encode each object as one line of NDJSON."""
    return b"".join(_encoder.encode(o) + b"\n" for o in objs)


def to_text(value: t.Any) -> str:  # noqa: ANN401
    """A value as text for a URL or a form field: strings as they are, dates ISO 8601, anything else JSON."""
    encoded = _encoder.encode(value)  # Decimals keep every digit
    return _decoder.decode(encoded) if encoded[:1] == b'"' else encoded.decode()


def loads(data: bytes | str) -> t.Any:  # noqa: ANN401
    """Decode JSON text; raises ``msgspec.DecodeError`` on malformed input."""
    return _decoder.decode(data)
