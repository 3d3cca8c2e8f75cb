"""The objects of one custom object schema, indexed by id and by externalId.

Encharge's `POST /v1/objects/{name}` creates; what it does with an externalId that already exists is not
documented. The sandbox refuses it with 409 by default and, with `duplicates` on, stores a second object with
the same externalId (as Encharge might), so a test can prove the target relies on neither. When several
objects share an externalId, reads by externalId see the oldest and writes (PUT, PATCH, DELETE) reach them all.
Not thread-safe: the Store calls it under its lock.
"""

from __future__ import annotations

import bisect
from decimal import Decimal
from typing import AbstractSet, Any

from .errors import ApiError


def object_id(value: object) -> int | None:
    """An object id from a path segment or a JSON number; None when it cannot be one."""
    if isinstance(value, str):
        return int(value) if value.isdigit() else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)) and value == int(value):
        return int(value)
    return None


class CustomObjects:
    def __init__(self, name: str) -> None:
        self.name = name
        self.items: dict[int, dict[str, Any]] = {}
        self.by_external_id: dict[str, list[int]] = {}
        self.next_id = 1

    def with_external_id(self, external_id: str) -> list[dict[str, Any]]:
        """The objects with this externalId, oldest first (none, one, or duplicates)."""
        return [self.items[i] for i in self.by_external_id.get(external_id, ())]

    def matches(self, key: Any, by: str) -> list[dict[str, Any]]:  # noqa: ANN401 - an id or an externalId
        """The objects with this id, or with this externalId (oldest first); ApiError 404 when none."""
        if by == "externalId":
            found = self.with_external_id(key)
        else:
            number = object_id(key)
            found = [self.items[number]] if number in self.items else []
        if not found:
            raise ApiError(404, f"No {self.name} object with {by} {key!r}")
        return found

    def find(self, key: Any, by: str) -> dict[str, Any]:  # noqa: ANN401 - as matches
        return self.matches(key, by)[0]

    def check_new(
        self,
        external_id: Any,  # noqa: ANN401 - any JSON value
        where: str,
        *,
        duplicates: bool,
        taken: AbstractSet[str] = frozenset(),
    ) -> None:
        """409 when a create would repeat an existing externalId (unless duplicates are stored)."""
        if duplicates or external_id is None:
            return
        if external_id in self.by_external_id or external_id in taken:
            raise ApiError(
                409,
                f"{where}: a {self.name} object with externalId {external_id!r} already exists "
                f"(POST creates; PUT /objects/{self.name} upserts)",
            )

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": self.next_id}
        self.next_id += 1
        self.items[obj["id"]] = obj
        self._assign(obj, fields)
        return obj

    def update(self, obj: dict[str, Any], fields: dict[str, Any], *, duplicates: bool) -> None:
        external_id = fields.get("externalId")
        if external_id is not None and external_id != obj.get("externalId"):
            owners = self.by_external_id.get(external_id, ())
            if owners and not duplicates:
                raise ApiError(409, f"A {self.name} object with externalId {external_id!r} already exists")
            self._unindex(obj)
        self._assign(obj, fields)

    def delete(self, obj: dict[str, Any]) -> None:
        self._unindex(obj)
        del self.items[obj["id"]]

    def duplicates(self) -> dict[str, int]:
        """externalId -> how many objects share it, for those held by more than one."""
        return {key: len(ids) for key, ids in self.by_external_id.items() if len(ids) > 1}

    def _assign(self, obj: dict[str, Any], fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key != "id":
                obj[key] = value
        external_id = obj.get("externalId")
        if external_id is not None:
            ids = self.by_external_id.setdefault(external_id, [])
            if obj["id"] not in ids:
                bisect.insort(ids, obj["id"])

    def _unindex(self, obj: dict[str, Any]) -> None:
        external_id = obj.get("externalId")
        ids = self.by_external_id.get(external_id) if external_id is not None else None
        if external_id is not None and ids is not None and obj["id"] in ids:
            ids.remove(obj["id"])
            if not ids:
                del self.by_external_id[external_id]
