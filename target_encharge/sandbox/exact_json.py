"""JSON in and out of the sandbox with every digit kept: a number a float cannot hold stays a Decimal.

`loads` gives floats for the numbers a float holds exactly as written (so `49.9` stays `49.9` for tests
comparing with float literals), and a Decimal for the rest (a 39-digit number, `1e400`). `dumps` writes
Decimals as the bare JSON numbers they are; without a Decimal in the value it is plain `json.dumps`.
"""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any

#: Stands in for a Decimal while the C encoder runs; a per-process nonce, so no request can forge it.
_MARK = f"\x00exact-{secrets.token_hex(8)}:"
_MARKED = re.compile(re.escape(json.dumps(_MARK)[:-1]) + r'(\d+)"')


def parse_number(text: str) -> float | Decimal:
    """A JSON number with a fraction or exponent: a float when that is exact, else the Decimal written."""
    value = float(text)
    if repr(value) == text:
        return value
    exact = Decimal(text)
    return value if exact.is_finite() and Decimal(repr(value)) == exact else exact


def loads(raw: bytes | str) -> Any:  # noqa: ANN401 - any JSON value
    """Parse JSON keeping numbers exact (ValueError when it is not JSON)."""
    return json.loads(raw, parse_float=parse_number)


def dumps(value: Any, indent: int | None = None) -> str:  # noqa: ANN401 - any JSON value
    """Compact JSON (or indented), Decimals as exact numbers; anything else unknown as its str()."""
    exact: list[str] = []

    def default(obj: object) -> object:
        if isinstance(obj, Decimal):
            exact.append(str(obj))
            return f"{_MARK}{len(exact) - 1}"
        return str(obj)

    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, separators=separators, indent=indent, default=default)
    return _MARKED.sub(lambda match: exact[int(match.group(1))], text) if exact else text
