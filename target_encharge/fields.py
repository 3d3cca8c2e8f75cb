"""The field contract: what a stream sends, held against the fields the Encharge account has (person fields from
`GET /fields`, a custom object's from `GET /schemas`), read once per run before anything is sent.

- A field the account lacks is named once per run and stream (Encharge may drop it); with `create_missing_fields`
  it is created first, typed from the stream's SCHEMA (:func:`field_spec`).
- A read-only field is left out of what is sent, named once.
- A value that cannot be read as its field's type is refused before sending, naming the field; one that can (the
  text "3" for a number) is sent as that type (:meth:`FieldContract.apply`).

And consent (:class:`Consent`): person upserts never send `unsubscribed: false` unless `allow_resubscribe`.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import logging
import math
import threading
import typing as t

from target_encharge import encoding

logger = logging.getLogger("target_encharge")

MAX_VALUE_CHARS = 5000  # Encharge's limit on one field's value
MAX_PERSON_BYTES = 200 * 1024  # Encharge's limit on one person
NOT_FIELDS = frozenset(("tags",))  # what a person upsert carries that is not a field
FALSE_TEXT = frozenset(("false", "0", "no"))
TRUE_TEXT = frozenset(("true", "1", "yes"))


def _schema_type(spec: dict) -> tuple[str, str | None]:
    """The JSON type (string, number, integer, boolean) and date format a SCHEMA property holds, nulls aside."""
    branches = [spec, *[b for b in spec.get("anyOf") or spec.get("oneOf") or () if isinstance(b, dict)]]
    for branch in branches:
        types = branch.get("type")
        types = [types] if isinstance(types, str) else list(types or ())
        for kind in ("integer", "number", "boolean", "string"):
            if kind in types:
                fmt = branch.get("format") if kind == "string" else None
                return kind, fmt if fmt in ("date", "date-time") else None
    return "string", None


def field_spec(name: str, spec: dict) -> dict:
    """The field `POST /fields` creates for a SCHEMA property: its type (string, number, integer, boolean) and, for
    `date` and `date-time` strings, its format."""
    kind, fmt = _schema_type(spec)
    return {"name": name, "type": kind, **({"format": fmt} if fmt else {})}


_Shape = tuple[tuple[str, ...], tuple[str, ...]]  # a record shape's names left out, and its numbers to read


@dataclasses.dataclass
class FieldContract:
    """One stream's fields against the account's: what is left out, and how each value must read."""

    stream: str
    owner: str  # "person", or the custom object schema's name
    fields: dict[str, dict]  # the account's fields of ``owner``, by name
    keep: frozenset[str] = frozenset()  # identifiers: never left out, never checked
    read_only: frozenset[str] = frozenset()  # the stream's fields Encharge lists read-only: left out
    missing: tuple[str, ...] = ()  # the stream's fields Encharge does not have

    @classmethod
    def of(
        cls, stream: str, owner: str, account_fields: t.Iterable[dict], properties: dict, keep: t.Iterable[str]
    ) -> FieldContract:
        fields = {f["name"]: f for f in account_fields if isinstance(f, dict) and isinstance(f.get("name"), str)}
        keep = frozenset(keep)
        sent = [p for p in properties if p not in keep and p not in NOT_FIELDS and not p.startswith("_sdc_")]
        return cls(
            stream,
            owner,
            fields,
            keep,
            read_only=frozenset(p for p in sent if p in fields and fields[p].get("readOnly")),
            missing=tuple(p for p in sent if p not in fields),
        )

    def __post_init__(self) -> None:
        # per property, how its values are read: left out (read-only), sent as they are (no field of the account,
        # or an identifier), or the one Python type whose values are sent as they are (text within Encharge's
        # length, for a text field with no closed list of values); other values are read by :func:`_as_field`
        self._plans: dict[str, object] = {name: _LEFT_OUT for name in self.read_only}
        self._widest = 0  # the longest property name planned (its JSON text, escaped, bounds every other's)
        self._fractions: set[str] = set()  # number fields: a float with a fraction is sent as its exact decimal
        self._shapes: dict[tuple, _Shape | None] = {}  # by names and value types (see apply)

    def _plan(self, name: str) -> object:
        field = self.fields.get(name)
        kind = field.get("type") if field is not None else None
        if field is None or name in self.keep:
            plan: object = _AS_IT_IS
        elif kind == "string" and not (field.get("enum") and field.get("allowNewEnumValues") is False):
            plan = str
        elif kind in ("number", "integer"):
            plan = int
            if kind == "number":
                self._fractions.add(name)
        else:
            plan = bool if kind == "boolean" else _READ
        self._plans[name] = plan
        self._widest = max(self._widest, len(name))
        return plan

    def apply(self, record: dict) -> tuple[dict, str | None]:
        """``record`` as it is sent (read-only fields left out, values read as their field's type), or why it
        cannot be sent."""
        # a stream's records mostly share a few shapes (their names and the types of their values): what a shape
        # needs is planned once (:meth:`_shape`), and a record of it is copied, not read value by value
        key = (tuple(record), tuple(map(type, record.values())))
        try:
            shape = self._shapes[key]
        except KeyError:
            shape = self._shape(*key)
        if shape is None:
            return self._read(record)
        left_out, numbers = shape
        out = dict(record)
        for name in left_out:
            del out[name]
        for name in numbers:  # Decimals (the reader's numbers with a point) for number and integer fields
            value = record[name]
            if not value.is_finite():
                return self._read(record)
            if value == value.to_integral_value():
                out[name] = int(value)
            elif name not in self._fractions:
                return self._read(record)
        # measured whole: its JSON text is at least as long as any text value in it (a character takes a byte
        # or more), so within one value's limit nothing is too long, and a person is far within its own
        if len(encoding.dumps(out)) > MAX_VALUE_CHARS:
            return self._read(record)
        return out, None

    def _shape(self, names: tuple[str, ...], kinds: tuple[type, ...]) -> _Shape | None:
        """What records of these names and value types need: the names left out and the numbers to read; None
        when some value must be read by itself (:meth:`_read`)."""
        left_out: list[str] = []
        numbers: list[str] = []
        for name, kind in zip(names, kinds, strict=True):
            plan = self._plans.get(name) or self._plan(name)
            if plan is _LEFT_OUT:
                left_out.append(name)
            elif plan is int and kind is decimal.Decimal:
                numbers.append(name)
            elif not (plan is _AS_IT_IS or kind is plan or kind is type(None)):
                return self._remember(names, kinds, None)
        return self._remember(names, kinds, (tuple(left_out), tuple(numbers)))

    def _remember(self, names: tuple, kinds: tuple, shape: _Shape | None) -> _Shape | None:
        if len(self._shapes) < _SHAPES:
            self._shapes[(names, kinds)] = shape
        return shape

    def _read(self, record: dict) -> tuple[dict, str | None]:
        """:meth:`apply`, value by value."""
        out: dict = {}
        plans = self._plans
        # the text values of ``out`` hold, so that an ordinary person is not encoded once more only to be measured
        # (a container is measured); only a person has a limit
        chars, measure = 0, False
        for name, value in record.items():
            try:
                plan = plans[name]
            except KeyError:
                plan = self._plan(name)
            if plan is _LEFT_OUT:
                continue
            kind = type(value)
            if kind is str:
                size = len(value)
                if plan is _AS_IT_IS or (plan is str and size <= MAX_VALUE_CHARS):
                    out[name] = value
                    chars += size
                    continue
            elif value is None or kind is plan or (plan is _AS_IT_IS and kind in _SCALARS):
                out[name] = value
                continue
            if plan is _AS_IT_IS:
                read = value
            elif kind is float and name in self._fractions and not value.is_integer() and math.isfinite(value):
                read = decimal.Decimal(repr(value))  # as _as_field reads it, without the detours
            else:
                read, problem = _as_field(name, value, self.fields[name])
                if problem:
                    return record, problem
            out[name] = read
            if isinstance(read, str):
                chars += len(read)
            elif isinstance(read, (dict, list, tuple)):
                measure = True
        if (
            self.owner == "person"
            and (
                measure
                or 2 + _ESCAPED * chars + len(out) * (_ESCAPED * self._widest + 4 + _SCALAR_BYTES) > MAX_PERSON_BYTES
            )
            and len(encoding.dumps(out)) > MAX_PERSON_BYTES
        ):
            return record, f"the person is larger than Encharge's {MAX_PERSON_BYTES // 1024} KB"
        return out, None


_SCALARS = frozenset({int, float, bool, decimal.Decimal, datetime.datetime, datetime.date, datetime.time})
_LEFT_OUT, _AS_IT_IS, _READ = object(), object(), object()  # how a property is read (see FieldContract._plan)
_SHAPES = 256  # shapes remembered per stream; a record of any other is read value by value
_SCALAR_BYTES = 64  # the most JSON text a number, a boolean, null or a date-time takes
_ESCAPED = 6  # the most JSON text one character of a string takes (``\u001f``)


def _misfit(name: str, value: t.Any, kind: t.Any) -> str:  # noqa: ANN401
    article = "an" if str(kind)[:1] in "aeiou" else "a"
    return f"field '{name}': {_shown(value)} is not {article} {kind} (Encharge's field '{name}' is {kind})"


def _shown(value: t.Any) -> str:  # noqa: ANN401
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_field(name: str, value: t.Any, field: dict) -> tuple[t.Any, str | None]:  # noqa: ANN401
    """``value`` read as ``field``'s type, or why it cannot be."""
    kind = field.get("type")
    if kind in ("number", "integer"):
        number = _number(value)
        if number is None or (kind == "integer" and number != number.to_integral_value()):
            return value, _misfit(name, value, kind)
        return (int(number) if number == number.to_integral_value() else number), None
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        word = str(value).strip().lower()
        if word in TRUE_TEXT or word in FALSE_TEXT:
            return word in TRUE_TEXT, None
        return value, _misfit(name, value, kind)
    if kind == "string":
        text: str | None = value if isinstance(value, str) else None
        if text is None and isinstance(value, (int, decimal.Decimal, float)) and not isinstance(value, bool):
            text = encoding.to_text(value)
        if text is not None:
            if len(text) > MAX_VALUE_CHARS:
                return value, f"field '{name}': its value is longer than Encharge's {MAX_VALUE_CHARS:,} characters"
            allowed = field.get("enum")
            if allowed and field.get("allowNewEnumValues") is False and text not in allowed:
                return value, f"field '{name}': {_shown(text)} is not one of its values ({', '.join(allowed)})"
            return text, None
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value, None
    return value, None


def _number(value: t.Any) -> decimal.Decimal | None:  # noqa: ANN401
    """A value as a finite number, the text "3" too (None: it is not one)."""
    if isinstance(value, bool):
        return None
    try:
        number = decimal.Decimal(value.strip() if isinstance(value, str) else str(value))
    except (decimal.InvalidOperation, TypeError):
        return None
    if not isinstance(value, (str, int, float, decimal.Decimal)) or not number.is_finite():
        return None
    return number


class Consent:
    """Person upserts never send `unsubscribed: false` (or "false") unless `allow_resubscribe`: what they left
    out, counted per run, told once."""

    def __init__(self) -> None:
        self.left_out = 0
        self._lock = threading.Lock()

    def kept(self, record: dict) -> dict:
        """``record`` without an `unsubscribed` that would re-subscribe the person."""
        value = record.get("unsubscribed", True)
        if not (value is False or (isinstance(value, str) and value.strip().lower() == "false")):
            return record
        with self._lock:
            self.left_out += 1
        return {k: v for k, v in record.items() if k != "unsubscribed"}

    def warning(self) -> str | None:
        if not self.left_out:
            return None
        return (
            f"{self.left_out} person record(s) carried unsubscribed: false, left out so that nobody who opted out is "
            "subscribed again (allow_resubscribe: true sends it)"
        )
