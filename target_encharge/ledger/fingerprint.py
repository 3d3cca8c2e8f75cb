"""What a payload looks like to the ledger: canonical JSON, and a short hash of it.

Equal payloads give equal fingerprints in every run and every process: keys sorted, numbers by value (``1.50``,
``1.5`` and the float ``1.5`` are one number; ``2``, ``2.0`` and ``Decimal("2.00")`` another), date-times as
ISO 8601 in UTC, dates and times as ISO 8601. Strings are never reinterpreted.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import math
import typing as t
from decimal import Decimal

import msgspec

_canonical = msgspec.json.Encoder(order="sorted", decimal_format="number")


def _number(value: Decimal | float) -> int | Decimal | float | str:
    """A number by its value: integral ones as ints, others as their shortest exact decimal."""
    if isinstance(value, float):
        if -_EXACT < value < _EXACT and value.is_integer():
            return int(value)  # (exactly: below 2**53 the float is the integer its shortest text names)
        if _PLAIN_FLOATS[0] <= abs(value) < _PLAIN_FLOATS[1]:
            return value  # msgspec writes it as its shortest decimal without exponent: the text of the Decimal below
        if not math.isfinite(value):
            return str(value)
        value = Decimal(repr(value))
    elif type(value) is Decimal:  # what the reader makes of a number with a point: most are short and plain
        text = str(value)
        if "E" not in text and "." in text:
            if text[-1] != "0" and len(text) <= _PLAIN_DECIMAL:
                return value  # msgspec writes this very text, which is already what normalize() would give
            if text.endswith(".0"):
                return int(text[:-2])  # `2.0`: integral
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return int(value)
    return value.normalize(_EVERY_DIGIT)


_AS_IS = frozenset({str, int, bool, type(None)})
_EXACT = 2.0**53
_PLAIN_FLOATS = (1e-4, 1e15)  # where Python's shortest repr has no exponent and a Decimal's text none either
_PLAIN_DECIMAL = 28  # characters: short enough that this text is what normalize() would give
# normalize() without rounding: the default context keeps 28 digits, so a change in the 30th would read unchanged
_EVERY_DIGIT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def _plain(value: t.Any) -> t.Any:  # noqa: ANN401
    """``value`` with every number, date and container in its canonical form."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is dict:  # a record: a copy with its numbers, date-times and containers made canonical (if any)
        plain = None
        for key, item in value.items():
            if type(key) is not str:
                return _plain_keys(value)
            of = type(item)
            if of not in _AS_IS:
                if plain is None:
                    plain = value.copy()
                plain[key] = _CANONICAL.get(of, _plain)(item)
        return value if plain is None else plain
    if kind is float:
        return _number(value)
    if kind is list:
        return [item if (of := type(item)) in _AS_IS else _CANONICAL.get(of, _plain)(item) for item in value]
    if kind is datetime.datetime:
        return _moment(value)
    if isinstance(value, (Decimal, float)):
        return _number(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset():
            value = value.astimezone(datetime.timezone.utc)
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, t.Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item) for item in value), key=_canonical.encode)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (str, int)):  # subclasses: an enum member, a str subclass
        return value
    return str(value)


def _plain_keys(value: dict) -> dict:
    """A mapping with keys that are not text (not from JSON): every key as its text."""
    return {key if type(key) is str else str(key): _plain(item) for key, item in value.items()}


_text = msgspec.json.Encoder()


def _moment(value: datetime.datetime) -> str:
    """A date-time's ISO 8601 text, in UTC when it has an offset: ``isoformat``'s text. msgspec writes the same
    digits in a tenth of the time (an aware ``isoformat`` is the slowest step of a fingerprint), only with ``Z``
    where ``isoformat`` writes ``+00:00``."""
    offset = value.utcoffset()
    if offset is None:  # naive: no offset either way
        return _text.encode(value)[1:-1].decode()
    if offset:
        value = value.astimezone(datetime.timezone.utc)
    return _text.encode(value)[1:-2].decode() + "+00:00"


_CANONICAL: dict[type, t.Callable[[t.Any], t.Any]] = {float: _number, Decimal: _number, datetime.datetime: _moment}


def canonical_json(value: t.Any) -> str:  # noqa: ANN401
    """``value`` as canonical JSON text: equal values (in the sense above) give equal text."""
    return _canonical.encode(_plain(value)).decode()


def fingerprint(payload: t.Any) -> str:  # noqa: ANN401
    """A short hex digest of ``payload``'s canonical JSON, stable across runs, processes and machines."""
    return hashlib.blake2b(_canonical.encode(_plain(payload)), digest_size=16).hexdigest()
