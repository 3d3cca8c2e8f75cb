"""The sandbox's in-memory Encharge account: people, tags, custom objects and events.

Semantics follow Encharge's documentation: people are upserted, matched by id, then userId, then email;
an archived person is out of lookups, listings and tagging until an upsert brings them back; a forced delete
takes the person with their tags and events (the identifiers stay listed, for tests, as deleted people);
tags are added to and removed from existing people only; custom objects live in named, case-sensitive
schemas; `identify` events update the person only, other events are recorded. People and custom objects
have fields (fields.py) and are linked by associations (associations.py), by their Encharge ids. Every method
takes the one lock, checks everything it can before changing anything, and raises ApiError with the HTTP
status to answer.
"""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from .associations import PERSON, Associations, Link
from .custom_objects import CustomObjects
from .errors import ApiError
from .fields import OBJECT_FIELDS, PERSON_FIELDS, FieldSet
from .schemas import IDENTIFIERS

#: Keys of a person body that are not person fields.
_NOT_FIELDS = ("tags",)


def split_tags(value: str | list[str] | None) -> list[str]:
    """Encharge's "tag1,tag2" (or a list of them) as a list of distinct, trimmed tags."""
    parts = value.split(",") if isinstance(value, str) else (value or [])
    tags: list[str] = []
    for part in parts:
        tag = part.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _describe(ident: dict[str, Any]) -> str:
    return ", ".join(f"{key} {ident[key]!r}" for key in IDENTIFIERS if ident.get(key))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _same_person(user: dict[str, Any], person: dict[str, Any]) -> bool:
    """Whether an event's user names this person (by id, userId, or email without regard to case)."""
    if user.get("id") and user["id"] == person["id"]:
        return True
    if user.get("userId") and user["userId"] == person.get("userId"):
        return True
    email = user.get("email")
    return bool(email and person.get("email") and email.lower() == person["email"].lower())


class Store:
    """One Encharge account in memory, safe to use from many handler threads."""

    def __init__(
        self,
        schemas: Iterable[str] = ("company", "subscription"),
        *,
        duplicate_objects: bool = False,
        drop_unknown_fields: bool = False,
    ) -> None:
        self.schema_names = tuple(schemas)
        #: POST /objects with an externalId that exists: False answers 409, True stores a duplicate.
        self.duplicate_objects = duplicate_objects
        #: A person or object write with a field the account does not have: False keeps it (and lists the
        #: field from then on), True drops it.
        self.drop_unknown_fields = drop_unknown_fields
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._people: dict[str, dict[str, Any]] = {}
            self._by_user_id: dict[str, str] = {}
            self._by_email: dict[str, str] = {}
            self._deleted: list[dict[str, Any]] = []
            self._schemas = {name: CustomObjects(name) for name in self.schema_names}
            self._events: list[dict[str, Any]] = []
            self._person_fields = FieldSet(PERSON, PERSON_FIELDS)
            self._object_fields = {name: FieldSet(name, OBJECT_FIELDS) for name in self.schema_names}
            self._associations = Associations(self.schema_names)

    # --- people ---------------------------------------------------------------------------------

    def _find(self, ident: dict[str, Any]) -> dict[str, Any] | None:
        """The person these identifiers name, archived or not."""
        if ident.get("id"):
            person = self._people.get(ident["id"])
            if person is not None:
                return person
        if ident.get("userId"):
            person_id = self._by_user_id.get(ident["userId"])
            if person_id is not None:
                return self._people[person_id]
        if ident.get("email"):
            person_id = self._by_email.get(ident["email"].lower())
            if person_id is not None:
                return self._people[person_id]
        return None

    def _existing(self, ident: dict[str, Any], *, archived_too: bool = False) -> dict[str, Any]:
        person = self._find(ident)
        if person is None:
            raise ApiError(404, f"No person with {_describe(ident)}")
        if person.get("archived") and not archived_too:
            raise ApiError(404, f"The person with {_describe(ident)} is archived (an upsert brings them back)")
        return person

    def _check_upsert(self, fields: dict[str, Any], where: str) -> None:
        """Refuse an upsert that names an unknown id alone, or takes another person's email or userId."""
        person = self._find(fields)
        if person is None:
            if fields.get("id") and not (fields.get("userId") or fields.get("email")):
                raise ApiError(404, f"{where}: no person with id {fields['id']!r}")
            return
        for key, index in (("userId", self._by_user_id), ("email", self._by_email)):
            value = fields.get(key)
            owner = index.get(value.lower() if key == "email" else value) if value else None
            if owner is not None and owner != person["id"]:
                raise ApiError(409, f"{where}: {key} {value!r} already belongs to another person")

    def _upsert(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields = self._person_fields.admit(fields, drop=self.drop_unknown_fields, keep=_NOT_FIELDS)
        person = self._find(fields)
        if person is None:
            person = {"id": str(uuid.uuid4())}
            self._people[person["id"]] = person
        person.pop("archived", None)  # as in Encharge: an upsert brings an archived person back
        for key, value in fields.items():
            if key == "id":
                continue
            if key == "tags":
                self._add_tags(person, split_tags(value))
            elif key in ("email", "userId"):
                if value:
                    self._reindex(person, key, value)
            else:
                person[key] = value
        person.setdefault("tags", [])
        return person

    def _reindex(self, person: dict[str, Any], key: str, value: str) -> None:
        index = self._by_email if key == "email" else self._by_user_id
        old = person.get(key)
        if old is not None:
            index.pop(old.lower() if key == "email" else old, None)
        person[key] = value
        index[value.lower() if key == "email" else value] = person["id"]

    def _forget(self, person: dict[str, Any]) -> None:
        """GDPR delete: the person, their tags and their events go; their identifiers are listed as deleted."""
        if self._people.pop(person["id"], None) is None:
            return
        if person.get("email"):
            self._by_email.pop(person["email"].lower(), None)
        if person.get("userId"):
            self._by_user_id.pop(person["userId"], None)
        self._events = [e for e in self._events if not _same_person(e["user"], person)]
        self._associations.forget(PERSON, person["id"])
        self._deleted.append({**{k: person[k] for k in IDENTIFIERS if person.get(k)}, "deletedAt": _now()})

    @staticmethod
    def _add_tags(person: dict[str, Any], tags: list[str]) -> None:
        current = person.setdefault("tags", [])
        current.extend(tag for tag in tags if tag not in current)

    @staticmethod
    def _public(person: dict[str, Any]) -> dict[str, Any]:
        """A copy safe to serialise outside the lock (values are replaced, never changed in place)."""
        return {**person, "tags": list(person["tags"])}

    def upsert_people(self, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            for index, fields in enumerate(people):
                self._check_upsert(fields, f"body[{index}]")
            return [self._public(self._upsert(fields)) for fields in people]

    def get_people(self, idents: list[dict[str, Any]], *, include_archived: bool = False) -> list[dict[str, Any]]:
        """The people that exist among those named, each once, in the order named."""
        with self._lock:
            found: dict[str, dict[str, Any]] = {}
            for ident in idents:
                person = self._find(ident)
                if person is not None and (include_archived or not person.get("archived")):
                    found.setdefault(person["id"], person)
            return [self._public(p) for p in found.values()]

    def all_people(self, limit: int, offset: int) -> list[dict[str, Any]]:
        with self._lock:
            people = [p for p in self._people.values() if not p.get("archived")][offset : offset + limit]
            return [self._public(p) for p in people]

    def archive_people(self, idents: list[dict[str, Any]], *, force: bool) -> None:
        """Archive (or, forced, delete) every person named; 404 and no change when one of them is not found."""
        with self._lock:
            people = [self._existing(ident, archived_too=True) for ident in idents]
            for person in people:
                if force:
                    self._forget(person)
                else:
                    person["archived"] = True

    def unsubscribe(self, ident: dict[str, Any]) -> None:
        with self._lock:
            self._existing(ident)["unsubscribed"] = True

    def add_tags(self, ident: dict[str, Any], tags: list[str]) -> None:
        with self._lock:
            self._add_tags(self._existing(ident), tags)

    def remove_tags(self, ident: dict[str, Any], tags: list[str]) -> None:
        with self._lock:
            person = self._existing(ident)
            person["tags"] = [tag for tag in person["tags"] if tag not in tags]

    def person_fields(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._person_fields.listed()

    def create_person_fields(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            return self._person_fields.create(specs)

    def object_fields(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            self._schema(name)
            return self._object_fields[name].listed()

    def create_object_fields(self, name: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            self._schema(name)
            return self._object_fields[name].create(specs)

    def _dropped(self) -> dict[str, dict[str, int]]:
        """Per person or schema, the unknown fields dropped and how many values each (drop mode)."""
        sets = [self._person_fields, *self._object_fields.values()]
        return {s.owner: dict(s.dropped) for s in sets if s.dropped}

    def people_count(self) -> int:
        with self._lock:
            return sum(1 for p in self._people.values() if not p.get("archived"))

    # --- custom objects -------------------------------------------------------------------------

    def _schema(self, name: str) -> CustomObjects:
        schema = self._schemas.get(name)
        if schema is None:
            known = ", ".join(self.schema_names) or "none"
            raise ApiError(
                404, f"No custom object schema named {name!r} (names are case-sensitive; this account has: {known})"
            )
        return schema

    def create_objects(self, name: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST: create every object, or (an externalId taken, duplicates off) none of them."""
        with self._lock:
            schema = self._schema(name)
            seen: set[str] = set()
            for index, fields in enumerate(objects):
                schema.check_new(
                    fields.get("externalId"), f"body[{index}]", duplicates=self.duplicate_objects, taken=seen
                )
                if fields.get("externalId") is not None:
                    seen.add(fields["externalId"])
            return [dict(schema.create(self._admit(name, fields))) for fields in objects]

    def upsert_object(self, name: str, fields: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """PUT: update the object with this id (404 if none), or those with this externalId, else create one."""
        with self._lock:
            schema = self._schema(name)
            if fields.get("id") is not None:
                found = schema.matches(fields["id"], "id")
            else:
                found = schema.with_external_id(fields["externalId"])
            fields = self._admit(name, fields)
            if not found:
                return True, dict(schema.create(fields))
            for obj in found:
                schema.update(obj, fields, duplicates=self.duplicate_objects)
            return False, dict(found[0])

    def update_object(self, name: str, key: str, by: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            schema = self._schema(name)
            found = schema.matches(key, by)
            fields = self._admit(name, fields)
            for obj in found:
                schema.update(obj, fields, duplicates=self.duplicate_objects)
            return dict(found[0])

    def delete_object(self, name: str, key: str, by: str) -> None:
        with self._lock:
            schema = self._schema(name)
            for obj in schema.matches(key, by):
                schema.delete(obj)
                self._associations.forget(name, obj["id"])

    def get_object(self, name: str, key: str, by: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._schema(name).find(key, by))

    def list_objects(self, name: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._schema(name).items.values())
            end = None if limit is None else offset + limit
            return [dict(obj) for obj in items[offset:end]]

    def count_objects(self, name: str) -> int:
        with self._lock:
            return len(self._schema(name).items)

    def require_schema(self, name: str) -> None:
        """ApiError 404 unless the account has a custom object schema of exactly this name."""
        self._schema(name)

    def _admit(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._object_fields[name].admit(fields, drop=self.drop_unknown_fields)

    # --- associations ---------------------------------------------------------------------------

    def _key(self, name: str, raw_id: Any) -> Any:  # noqa: ANN401 - a person's id string or an object's number
        """The Encharge id of an existing person (not archived) or custom object; ApiError 404 when none."""
        if name == PERSON:
            person = self._people.get(str(raw_id))
            if person is None or person.get("archived"):
                raise ApiError(404, f"No person with id {raw_id!r}" + (" (archived)" if person else ""))
            return person["id"]
        return self._schema(name).find(raw_id, "id")["id"]

    def _link(self, name: str, raw_id: str, association_id: str | None, target: str | None, raw_target_id: str) -> Link:
        for side in (name, target):
            if side is not None and side != PERSON:
                self._schema(side)
        if association_id is None:
            definition = self._associations.default(name, str(target))
        else:
            definition = self._associations.get(association_id)
        other = self._associations.other_side(definition, name)
        if target is not None and target != other:
            raise ApiError(400, f"Association {definition['id']} links {name} to {other}, not {target}")
        key, target_key = self._key(name, raw_id), self._key(other, raw_target_id)
        return self._associations.link_of(definition, name, key, target_key)

    def associate(
        self,
        name: str,
        raw_id: str,
        raw_target_id: str,
        *,
        target: str | None = None,
        association_id: str | None = None,
    ) -> None:
        """Link two existing ids under an association: the one named, or the one between name and target."""
        with self._lock:
            self._associations.add(self._link(name, raw_id, association_id, target, raw_target_id))

    def dissociate(self, name: str, raw_id: str, association_id: str, raw_target_id: str) -> None:
        with self._lock:
            self._associations.remove(self._link(name, raw_id, association_id, None, raw_target_id))

    def associated(self, name: str, raw_id: str, association_id: str | None = None) -> list[tuple[str, Any]]:
        """(object name, the person or object) of everything linked to an existing person or object."""
        with self._lock:
            if name != PERSON:
                self._schema(name)
            number = None if association_id is None else self._associations.get(association_id)["id"]
            found = self._associations.linked(name, self._key(name, raw_id), number)
            return [(other, self._entity(other, key)) for other, key in found]

    def _entity(self, name: str, key: Any) -> dict[str, Any]:  # noqa: ANN401 - as _key
        if name == PERSON:
            return self._public(self._people[key])
        return dict(self._schemas[name].items[key])

    def _seed_key(self, name: str, ident: dict[str, Any]) -> Any:  # noqa: ANN401 - as _key
        """The Encharge id of a person named by id, userId or email, or of an object by id or externalId."""
        if name == PERSON:
            person = self._find(ident)
            if person is None:
                raise ApiError(404, f"No person with {_describe(ident) or 'no identifier'}")
            return person["id"]
        if ident.get("externalId") is not None:
            return self._schema(name).find(ident["externalId"], "externalId")["id"]
        return ident.get("id")

    def seed_association(self, spec: dict[str, Any]) -> None:
        """A link as a record names it: the source by identifiers, the target by targetId or targetExternalId."""
        with self._lock:
            name, target = spec["objectName"], spec["targetObjectName"]
            key = self._seed_key(name, spec)
            target_key = self._seed_key(
                target, {"id": spec.get("targetId"), "externalId": spec.get("targetExternalId")}
            )
            association_id = spec.get("associationId")
            self._associations.add(
                self._link(name, key, None if association_id is None else str(association_id), target, target_key)
            )

    def define_association(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            for side in (spec["fromObject"], spec["toObject"]):
                if side != PERSON:
                    self._schema(side)
            return self._associations.define(spec)

    def undefine_association(self, raw_id: str) -> None:
        with self._lock:
            self._associations.undefine(raw_id)

    def associations_of(self, name: str) -> list[dict[str, Any]]:
        """The association definitions with this object on either side."""
        with self._lock:
            return self._associations.of(name)

    def associations(self) -> list[dict[str, Any]]:
        """Every link made, oldest first."""
        with self._lock:
            return self._associations.listed()

    # --- events ---------------------------------------------------------------------------------

    def track(self, event: dict[str, Any]) -> None:
        """An Ingest event: the person in `user` is upserted; events other than identify are recorded."""
        user = event["user"]
        with self._lock:
            self._check_upsert(user, "body.user")
            self._upsert(user)
            if event["name"] != "identify":
                self._events.append({**event, "receivedAt": _now()})

    # --- inspection -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Deep copies of everything that arrived, for tests and the inspection endpoint: people (archived
        ones flagged), people deleted for good, objects per schema, externalIds held by several objects, events."""
        with self._lock:
            state = {
                "people": list(self._people.values()),
                "deletedPeople": self._deleted,
                "objects": {name: list(s.items.values()) for name, s in self._schemas.items()},
                "duplicateObjects": {name: s.duplicates() for name, s in self._schemas.items() if s.duplicates()},
                "events": self._events,
                "associations": self._associations.listed(),
                "associationSchemas": list(self._associations.definitions.values()),
                "droppedFields": self._dropped(),
            }
            return copy.deepcopy(state)

    def people(self) -> list[dict[str, Any]]:
        """Everyone in the account, archived people too (flagged "archived": true)."""
        with self._lock:
            return copy.deepcopy(list(self._people.values()))

    def deleted_people(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._deleted)

    def person(self, ident: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._find(ident))

    def objects(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            schema = self._schemas.get(name)
            return copy.deepcopy(list(schema.items.values())) if schema else []

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._events)
