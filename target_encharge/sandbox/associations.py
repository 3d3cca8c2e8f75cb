"""Associations: how people and custom objects are linked, defined between two objects, made between two ids.

Encharge's OpenAPI defines an association (CustomObjectSchemaAssociation) by `id`, `type` (1:1, 1:M, M:M),
`fromObject`, `toObject` and an optional `name`, two-way; links are made and removed by Encharge ids (a
person's id string, a custom object's number). The sandbox starts each account with one association between
`person` and each custom object schema (type M:M: which type Encharge gives its built-in ones is not
documented, and the sandbox enforces no type). Not documented either, so chosen defensively: linking twice is
one link (201 again); removing a link that is not there is 404; the default association between two objects
that have none is 404, and between two that have several is 400, naming their ids.
Not thread-safe: the Store calls it under its lock.
"""

from __future__ import annotations

from typing import Any, Iterable

from .custom_objects import object_id
from .errors import ApiError

PERSON = "person"

#: A link: (associationId, id on the fromObject side, id on the toObject side).
Link = tuple[int, Any, Any]


class Associations:
    def __init__(self, schema_names: Iterable[str]) -> None:
        self.definitions: dict[int, dict[str, Any]] = {}
        self.links: dict[Link, None] = {}  # a dict for its order: links are listed as they were made
        self._next_id = 1
        for name in schema_names:
            self.define({"type": "M:M", "fromObject": PERSON, "toObject": name})

    def define(self, spec: dict[str, Any]) -> dict[str, Any]:
        definition = {"id": self._next_id, **{k: v for k, v in spec.items() if k != "id"}}
        self._next_id += 1
        self.definitions[definition["id"]] = definition
        return dict(definition)

    def undefine(self, raw_id: str) -> None:
        """Remove a definition and every link made under it."""
        definition = self.get(raw_id)
        del self.definitions[definition["id"]]
        self.links = {link: None for link in self.links if link[0] != definition["id"]}

    def get(self, raw_id: Any) -> dict[str, Any]:  # noqa: ANN401 - a path segment or a JSON number
        number = object_id(raw_id)
        definition = self.definitions.get(number) if number is not None else None
        if definition is None:
            raise ApiError(404, f"No association with id {raw_id!r} (GET /v1/schemas lists them)")
        return definition

    def of(self, name: str) -> list[dict[str, Any]]:
        """The definitions with this object on either side."""
        return [dict(d) for d in self.definitions.values() if name in (d["fromObject"], d["toObject"])]

    def default(self, name: str, target: str) -> dict[str, Any]:
        """The one association between two objects (either way round)."""
        found = [d for d in self.definitions.values() if {d["fromObject"], d["toObject"]} == {name, target}]
        if not found:
            raise ApiError(
                404, f"No association between {name} and {target} is defined (GET /v1/schemas lists the associations)"
            )
        if len(found) > 1:
            ids = ", ".join(str(d["id"]) for d in found)
            raise ApiError(
                400,
                f"{name} and {target} have several associations (ids {ids}): name one, "
                f"POST /v1/objects/{name}/{{id}}/associations/{{associationId}}/{{targetId}}",
            )
        return found[0]

    @staticmethod
    def other_side(definition: dict[str, Any], name: str) -> str:
        """The object on the other side of this association from `name`."""
        if name == definition["fromObject"]:
            return str(definition["toObject"])
        if name == definition["toObject"]:
            return str(definition["fromObject"])
        raise ApiError(
            400,
            f"Association {definition['id']} links {definition['fromObject']} and {definition['toObject']}, not {name}",
        )

    @staticmethod
    def link_of(definition: dict[str, Any], name: str, key: Any, target_key: Any) -> Link:  # noqa: ANN401
        """The link as stored: the fromObject side first (a self-association keeps the order given)."""
        if name == definition["fromObject"]:
            return definition["id"], key, target_key
        return definition["id"], target_key, key

    def add(self, link: Link) -> None:
        self.links[link] = None

    def remove(self, link: Link) -> None:
        if link not in self.links:
            raise ApiError(404, f"No such link under association {link[0]}: nothing to remove")
        del self.links[link]

    def linked(self, name: str, key: Any, association_id: int | None = None) -> list[tuple[str, Any]]:  # noqa: ANN401
        """(object name, id) of everything linked to this person or object, under one association or any."""
        found: list[tuple[str, Any]] = []
        for number, from_key, to_key in self.links:
            definition = self.definitions[number]
            if association_id is not None and number != association_id:
                continue
            if definition["fromObject"] == name and from_key == key:
                found.append((definition["toObject"], to_key))
            if definition["toObject"] == name and to_key == key and (definition["fromObject"], from_key) != (name, key):
                found.append((definition["fromObject"], from_key))
        return found

    def forget(self, name: str, key: Any) -> None:  # noqa: ANN401 - a person's id string or an object's number
        """Drop every link that touches this person or object (it is gone)."""

        def touches(link: Link) -> bool:
            definition = self.definitions[link[0]]
            return (definition["fromObject"] == name and link[1] == key) or (
                definition["toObject"] == name and link[2] == key
            )

        self.links = {link: None for link in self.links if not touches(link)}

    def listed(self) -> list[dict[str, Any]]:
        """Every link, as the state shows it."""
        rows = []
        for number, from_key, to_key in self.links:
            definition = self.definitions[number]
            rows.append(
                {
                    "associationId": number,
                    "fromObject": definition["fromObject"],
                    "fromId": from_key,
                    "toObject": definition["toObject"],
                    "toId": to_key,
                }
            )
        return rows
