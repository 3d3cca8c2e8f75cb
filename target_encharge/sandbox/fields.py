"""Person fields and custom object fields: what `GET /v1/fields` and `GET /v1/schemas` list, what POST creates.

Shapes follow Encharge's OpenAPI: a listed field is an IPersonField (only `name` and `type` required); a created
one is answered as a PersonField (name, type, title, format, readOnly, canMapFrom, firstClassField, array,
createdBy). The built-in person fields are the EndUser ones the OpenAPI names (id, email, userId, name, firstName,
lastName) and the default fields Encharge's help pages describe (company, website, phone, unsubscribed; and the
non-editable ones: createdAt, updatedAt, lastActivity, timezone, ip). Their exact names beyond EndUser's are the
sandbox's reading of those pages, not a documented list.

What an account does with a field it does not have is not documented: by default the sandbox keeps the value
and lists the field from then on (typed from the first value, as fields appear when an app is connected); with
`drop` on, it stores nothing of it and counts what it dropped. A read-only field that arrives is stored as sent:
Encharge's help says its non-editable fields can still be updated through the API. Values are not checked
against their field's type or `enum` (Encharge's handling of misfits is not documented either).
Not thread-safe: the Store calls it under its lock.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any, Iterable

from .errors import ApiError

_JSON_TYPES = {bool: "boolean", int: "number", float: "number", Decimal: "number", str: "string"}


def _builtin(
    name: str, title: str, kind: str = "string", *, read_only: bool = False, first_class: bool = False, **extra: str
) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "type": kind,
        "readOnly": read_only,
        "array": False,
        "firstClassField": first_class,
        **extra,
    }


#: Person fields every Encharge account has (GET /v1/fields lists them first).
PERSON_FIELDS = (
    _builtin("email", "Email", first_class=True, displayType="email"),
    _builtin("userId", "User ID", first_class=True),
    _builtin("firstName", "First name", first_class=True),
    _builtin("lastName", "Last name", first_class=True),
    _builtin("name", "Name", first_class=True),
    _builtin("id", "Id", read_only=True, first_class=True),
    _builtin("company", "Company"),
    _builtin("website", "Website", displayType="url"),
    _builtin("phone", "Phone", displayType="phone"),
    _builtin("unsubscribed", "Unsubscribed", "boolean"),
    _builtin("createdAt", "Date created", read_only=True, format="date-time"),
    _builtin("updatedAt", "Updated at", read_only=True, format="date-time"),
    _builtin("lastActivity", "Last activity", read_only=True, format="date-time"),
    _builtin("timezone", "Timezone", read_only=True),
    _builtin("ip", "IP", read_only=True),
)

#: Fields every custom object schema has.
OBJECT_FIELDS = (
    _builtin("id", "Id", "number", read_only=True, first_class=True),
    _builtin("externalId", "External ID", first_class=True),
    _builtin("name", "Name", first_class=True),
)

#: What POST /v1/fields answers for a created field when the request leaves a PersonField key out.
_CREATED_DEFAULTS = {
    "format": None,
    "readOnly": False,
    "canMapFrom": True,
    "firstClassField": False,
    "array": False,
    "createdBy": "api",
}


class FieldSet:
    """The fields of one kind of object (people, or one custom object schema), in the order they came."""

    def __init__(self, owner: str, builtin: Iterable[dict[str, Any]]) -> None:
        self.owner = owner
        self._fields = {field["name"]: dict(field) for field in builtin}
        #: field name -> values dropped (drop mode), for the state and the summary.
        self.dropped: Counter[str] = Counter()

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def listed(self) -> list[dict[str, Any]]:
        return [dict(field) for field in self._fields.values()]

    def create(self, specs: list[dict[str, Any]], where: str = "body") -> list[dict[str, Any]]:
        """Create every field, or (a name taken, or twice in the body) none: 409, since re-creating a field
        is not documented and a target must not count on it."""
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            name = spec["name"]
            if name in self._fields or name in seen:
                raise ApiError(409, f"{where}[{index}]: the {self.owner} field {name!r} already exists")
            seen.add(name)
        created = []
        for spec in specs:
            field = {**_CREATED_DEFAULTS, "title": spec["name"], **spec}
            self._fields[field["name"]] = field
            created.append(dict(field))
        return created

    def admit(self, values: dict[str, Any], *, drop: bool, keep: Iterable[str] = ()) -> dict[str, Any]:
        """The values to store: known fields (and `keep` keys) always; an unknown field's value is kept and the
        field listed from then on, or, with `drop`, left out and counted."""
        kept_keys = frozenset(keep)
        admitted: dict[str, Any] = {}
        for key, value in values.items():
            if key not in self._fields and key not in kept_keys:
                if drop:
                    self.dropped[key] += 1
                    continue
                self._fields[key] = _builtin(key, key, _JSON_TYPES.get(type(value), "string"))
            admitted[key] = value
        return admitted
