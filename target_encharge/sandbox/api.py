"""Encharge's REST and Ingest endpoints: routing, auth, body checks, and the answers, over the Store.

Knows nothing of sockets: the server hands it a method, a path, the query, the token and the parsed body,
and gets back a status and a JSON-able payload (None for the bodiless 201 and 204 answers).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from . import schemas
from .errors import ApiError
from .schemas import BodyError, require_identifier
from .store import Store, split_tags

REST_PREFIX = "/v1/"
INGEST_PATH = "/ingest/v1"
NO_BODY = None

_PEOPLE_QUERY = re.compile(r"^people\[(\d+)\]\[(id|userId|email)\]$")

Answer = tuple[int, Any]


@dataclass
class Call:
    """One request, as the endpoint handlers see it."""

    method: str
    query: dict[str, str]
    body: Any = None
    body_error: str | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Where a request goes: its endpoint label (for counts), which API it belongs to, and its handler."""

    endpoint: str
    api: str | None  # "rest", "ingest", or None for an unknown path
    handler: Callable[[Call], Answer] | None
    params: dict[str, str]


def envelope(message: str, trace_id: str) -> dict[str, Any]:
    """Encharge's documented error body."""
    return {"error": {"message": message, "markdown": message, "traceId": trace_id}}


def _plural(name: str) -> str:
    title = name[:1].upper() + name[1:]
    if title.endswith("y") and not title.endswith(("ay", "ey", "oy", "uy")):
        return title[:-1] + "ies"
    return title + ("es" if title.endswith(("s", "x", "ch", "sh")) else "s")


class Api:
    def __init__(
        self, store: Store, api_key: str, write_key: str, account_id: int = 1, account_name: str = "Encharge sandbox"
    ) -> None:
        self.store = store
        self.account_id, self.account_name = account_id, account_name
        self._api_key = api_key.encode()
        self._write_key = write_key.encode()
        # (path pattern after /v1/, {method: handler}); literal segments before placeholders.
        self._routes: list[tuple[tuple[str, ...], dict[str, Callable[[Call], Answer]]]] = [
            (("people",), {"GET": self.get_people, "POST": self.post_people, "DELETE": self.archive_people}),
            (("people", "all"), {"GET": self.all_people}),
            (("people", "unsubscribe"), {"POST": self.unsubscribe}),
            (("tags",), {"POST": self.add_tag, "DELETE": self.remove_tag}),
            (("objects", "{name}"), {"GET": self.list_objects, "POST": self.create_objects, "PUT": self.upsert_object}),
            (("objects", "{name}", "count"), {"GET": self.count_objects}),
            (
                ("objects", "{name}", "{id}"),
                {"GET": self.get_object, "PATCH": self.update_object, "DELETE": self.delete_object},
            ),
            (
                ("objects", "{name}", "externalId", "{externalId}"),
                {"GET": self.get_object, "PATCH": self.update_object, "DELETE": self.delete_object},
            ),
            (("objects", "{name}", "{id}", "associations"), {"GET": self.all_associated}),
            (("objects", "{name}", "{id}", "associations", "{associationId}"), {"GET": self.associated}),
            (
                ("objects", "{name}", "{id}", "associations", "{associationId}", "{targetId}"),
                {"POST": self.associate, "DELETE": self.dissociate},
            ),
            (
                ("objects", "{name}", "{id}", "associations", "default", "{targetObjectName}", "{targetId}"),
                {"POST": self.associate_by_default},
            ),
            (("schemas",), {"GET": self.list_schemas}),
            (("schemas", "associations"), {"POST": self.define_association}),
            (("schemas", "associations", "{associationId}"), {"DELETE": self.undefine_association}),
            (("schemas", "{name}"), {"GET": self.get_schema}),
            (("schemas", "{name}", "fields"), {"POST": self.create_object_fields}),
            (("accounts", "info"), {"GET": self.account_info}),
            (("fields",), {"GET": self.fields, "POST": self.create_fields}),
        ]

    # --- routing and auth -----------------------------------------------------------------------

    def route(self, method: str, path: str) -> Route:
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        if path == INGEST_PATH:
            handler = self.track_event if method == "POST" else None
            return Route(f"{method} {INGEST_PATH}", "ingest" if handler else None, handler, {})
        if path.startswith(REST_PREFIX):
            segments = [unquote(s) for s in path[len(REST_PREFIX) :].split("/")]
            for pattern, methods in self._routes:
                params = self._match(pattern, segments)
                if params is not None and method in methods:
                    return Route(f"{method} {REST_PREFIX}{'/'.join(pattern)}", "rest", methods[method], params)
        return Route(f"{method} (unknown path)", None, None, {})

    @staticmethod
    def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
        if len(pattern) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(pattern, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params

    def key_name(self, token: str | None) -> str | None:
        """Which key a token is ("api_key", "write_key", "wrong"), None when there is none; never the token."""
        if token is None:
            return None
        raw = token.encode()
        if hmac.compare_digest(raw, self._api_key):
            return "api_key"
        if hmac.compare_digest(raw, self._write_key):
            return "write_key"
        return "wrong"

    def mentions_key(self, data: bytes) -> bool:
        """Whether either key appears anywhere in data (so the log must not keep it as is)."""
        return any(key and key in data for key in (self._api_key, self._write_key))

    def redact(self, data: bytes) -> bytes:
        for key in (self._api_key, self._write_key):
            if key:
                data = data.replace(key, b"***")
        return data

    def check_auth(self, api: str | None, token: str | None) -> None:
        raw = (token or "").encode()
        if api == "rest":
            if not hmac.compare_digest(raw, self._api_key):
                hint = (
                    " This is the Ingest write key; the REST API takes the API key."
                    if token and hmac.compare_digest(raw, self._write_key)
                    else ""
                )
                raise ApiError(
                    401,
                    "Unauthorized: send your Encharge API key in the X-Encharge-Token header "
                    "(or the token query parameter)." + hint,
                )
        elif not hmac.compare_digest(raw, self._write_key):
            hint = (
                " This is the REST API key; the Ingest API takes the write key."
                if token and hmac.compare_digest(raw, self._api_key)
                else ""
            )
            raise ApiError(401, "Unauthorized: send your Encharge write key in the X-Encharge-Token header." + hint)

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _body(call: Call, validate: Callable[[Any], None]) -> Any:  # noqa: ANN401 - any JSON value
        if call.body_error is not None:
            raise ApiError(400, call.body_error)
        if call.body is None:
            raise ApiError(400, "The request needs a JSON body")
        try:
            validate(call.body)
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        return call.body

    @staticmethod
    def _identifier(body: dict[str, Any], where: str = "body") -> dict[str, str]:
        try:
            return require_identifier(body, where)
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None

    @staticmethod
    def _number(call: Call, name: str, default: int) -> int:
        raw = call.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(float(raw))
        except ValueError:
            raise ApiError(400, f"Query parameter {name} must be a number, got {raw!r}") from None
        if value < 0:
            raise ApiError(400, f"Query parameter {name} must be 0 or more")
        return value

    @staticmethod
    def _people_query(call: Call) -> list[dict[str, str]]:
        """`?people[0][email]=a&people[1][userId]=b`, or the simple `?email=`/`?userId=`/`?id=`."""
        people: dict[int, dict[str, str]] = {}
        for key, value in call.query.items():
            match = _PEOPLE_QUERY.match(key)
            if match and value:
                people.setdefault(int(match.group(1)), {})[match.group(2)] = value
        idents = [people[i] for i in sorted(people)]
        simple = {key: call.query[key] for key in ("id", "userId", "email") if call.query.get(key)}
        if simple:
            idents.append(simple)
        if not idents:
            raise ApiError(400, "Name the people in the query, e.g. ?people[0][email]=ada@example.com")
        return idents

    def _schema_name(self, call: Call) -> str:
        name = call.params["name"]
        self.store.require_schema(name)
        return name

    @staticmethod
    def _object_key(call: Call) -> tuple[str, str]:
        if "externalId" in call.params:
            return call.params["externalId"], "externalId"
        return call.params["id"], "id"

    # --- people and tags ------------------------------------------------------------------------

    def post_people(self, call: Call) -> Answer:
        people = self._body(call, schemas.validate_people)
        for index, person in enumerate(people):
            self._identifier(person, f"body[{index}]")
        return 200, {"users": self.store.upsert_people(people)}

    def get_people(self, call: Call) -> Answer:
        """The people named that exist (none is an empty list); archived ones only with includeArchived=true."""
        include_archived = call.query.get("includeArchived", "").lower() == "true"
        return 200, {"users": self.store.get_people(self._people_query(call), include_archived=include_archived)}

    def all_people(self, call: Call) -> Answer:
        limit, offset = self._number(call, "limit", 100), self._number(call, "offset", 0)
        return 200, {"people": self.store.all_people(limit, offset)}

    def archive_people(self, call: Call) -> Answer:
        force = call.query.get("force", "").lower() == "true"
        self.store.archive_people(self._people_query(call), force=force)
        return 204, NO_BODY

    def unsubscribe(self, call: Call) -> Answer:
        ident = {key: call.query[key] for key in ("id", "userId", "email") if call.query.get(key)}
        if not ident:
            raise ApiError(400, "Name the person in the query: ?email=, ?userId= or ?id=")
        self.store.unsubscribe(ident)
        return 204, NO_BODY

    def _tag_call(self, call: Call) -> tuple[dict[str, str], list[str]]:
        body = self._body(call, schemas.validate_tag)
        tags = split_tags(body["tag"])
        if not tags:
            raise ApiError(400, "body.tag is empty: give one tag or a comma-separated list")
        return self._identifier(body), tags

    def add_tag(self, call: Call) -> Answer:
        self.store.add_tags(*self._tag_call(call))
        return 201, NO_BODY

    def remove_tag(self, call: Call) -> Answer:
        self.store.remove_tags(*self._tag_call(call))
        return 204, NO_BODY

    def fields(self, _call: Call) -> Answer:
        return 200, {"items": self.store.person_fields()}

    def create_fields(self, call: Call) -> Answer:
        """POST /v1/fields: an array of IPersonField, answered as {"items": [PersonField, ...]}."""
        return 200, {"items": self.store.create_person_fields(self._body(call, schemas.validate_fields))}

    def account_info(self, _call: Call) -> Answer:
        return 200, {
            "accountId": self.account_id,
            "name": self.account_name,
            "site": "sandbox.local",
            "status": "active",
            "timezone": "UTC",
            "peopleCount": self.store.people_count(),
            "services": {},
            "activeServices": [],
        }

    # --- custom objects -------------------------------------------------------------------------

    def create_objects(self, call: Call) -> Answer:
        name = self._schema_name(call)
        objects = self._body(call, schemas.validate_custom_objects)
        return 200, {"objects": self.store.create_objects(name, objects)}

    def upsert_object(self, call: Call) -> Answer:
        name = self._schema_name(call)
        fields = self._body(call, schemas.validate_custom_object)
        if fields.get("externalId") is None and fields.get("id") is None:
            raise ApiError(400, "PUT upserts by externalId (or id): the body has neither")
        created, obj = self.store.upsert_object(name, fields)
        return 200, {"created": created, "object": obj}

    def update_object(self, call: Call) -> Answer:
        name = self._schema_name(call)
        fields = self._body(call, schemas.validate_custom_object)
        return 200, {"object": self.store.update_object(name, *self._object_key(call), fields)}

    def delete_object(self, call: Call) -> Answer:
        self.store.delete_object(self._schema_name(call), *self._object_key(call))
        return 204, NO_BODY

    def get_object(self, call: Call) -> Answer:
        return 200, {"object": self.store.get_object(self._schema_name(call), *self._object_key(call))}

    def list_objects(self, call: Call) -> Answer:
        limit, offset = self._number(call, "limit", 100), self._number(call, "offset", 0)
        return 200, {"objects": self.store.list_objects(call.params["name"], limit, offset)}

    def count_objects(self, call: Call) -> Answer:
        return 200, {"count": self.store.count_objects(call.params["name"])}

    def _describe_schema(self, name: str) -> dict[str, Any]:
        """A CustomObjectSchema: names, display fields, its fields, and the associations it is a side of."""
        return {
            "name": name,
            "displayNameSingular": name[:1].upper() + name[1:],
            "displayNamePlural": _plural(name),
            "description": f"{name} objects (sandbox)",
            "primaryField": "name",
            "secondaryFields": [],
            "searchableFields": ["name"],
            "fields": self.store.object_fields(name),
            "associations": self.store.associations_of(name),
        }

    def list_schemas(self, _call: Call) -> Answer:
        return 200, {"objects": [self._describe_schema(name) for name in self.store.schema_names]}

    def get_schema(self, call: Call) -> Answer:
        return 200, {"object": self._describe_schema(self._schema_name(call))}

    def create_object_fields(self, call: Call) -> Answer:
        """POST /v1/schemas/{name}/fields: an array of CustomObjectField, answered as {"fields": [...]}."""
        name = self._schema_name(call)
        return 200, {"fields": self.store.create_object_fields(name, self._body(call, schemas.validate_fields))}

    def define_association(self, call: Call) -> Answer:
        """POST /v1/schemas/associations: {type, fromObject, toObject, name?}, answered as {"association": ...}."""
        return 200, {"association": self.store.define_association(self._body(call, schemas.validate_association))}

    def undefine_association(self, call: Call) -> Answer:
        self.store.undefine_association(call.params["associationId"])
        return 204, NO_BODY

    # --- associations (by Encharge ids: a person's id string, a custom object's number) ---------------

    def associate(self, call: Call) -> Answer:
        p = call.params
        self.store.associate(p["name"], p["id"], p["targetId"], association_id=p["associationId"])
        return 201, NO_BODY

    def associate_by_default(self, call: Call) -> Answer:
        p = call.params
        self.store.associate(p["name"], p["id"], p["targetId"], target=p["targetObjectName"])
        return 201, NO_BODY

    def dissociate(self, call: Call) -> Answer:
        p = call.params
        self.store.dissociate(p["name"], p["id"], p["associationId"], p["targetId"])
        return 204, NO_BODY

    def associated(self, call: Call) -> Answer:
        """GET .../associations/{associationId}: {"objects": [...]}, the people or objects on the other side."""
        p = call.params
        return 200, {"objects": [item for _, item in self.store.associated(p["name"], p["id"], p["associationId"])]}

    def all_associated(self, call: Call) -> Answer:
        """GET .../associations: {"objects": {...: [...]}}. The OpenAPI gives the map no key; the sandbox keys it
        by the other side's object name ("company", "person")."""
        grouped: dict[str, list[Any]] = {}
        for other, item in self.store.associated(call.params["name"], call.params["id"]):
            grouped.setdefault(other, []).append(item)
        return 200, {"objects": grouped}

    # --- seeding (the /_sandbox/seed endpoint: no auth, not logged) ---------------------------------

    def seed(self, body: Any) -> dict[str, int]:  # noqa: ANN401 - any JSON, checked here
        """Put fields, people, tags, objects and associations in the account as a flow or another tool would have;
        checked like the API's own bodies, applied in that order; returns how many of each (fields, object fields
        and associations only when given). Associations are resolved last: one naming a person or object that
        is not there is 404, after what came before it was applied."""
        try:
            schemas.validate_seed(body)
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        people, objects = body.get("people", []), body.get("objects", {})
        for index, person in enumerate(people):
            self._identifier(person, f"body.people[{index}]")
        tags = [
            (self._identifier(item, f"body.tags[{index}]"), split_tags(item["tag"]))
            for index, item in enumerate(body.get("tags", []))
        ]
        object_fields, associations = body.get("object_fields", {}), body.get("associations", [])
        for name in [*objects, *object_fields]:
            self.store.require_schema(name)
        if body.get("fields"):
            self.store.create_person_fields(body["fields"])
        for name, specs in object_fields.items():
            self.store.create_object_fields(name, specs)
        self.store.upsert_people(people)
        for ident, names in tags:
            self.store.add_tags(ident, names)
        for name, items in objects.items():
            self.store.create_objects(name, items)
        for spec in associations:
            self.store.seed_association(spec)
        counts = {"people": len(people), "tags": len(tags), "objects": sum(len(items) for items in objects.values())}
        extra = {
            "fields": len(body.get("fields", [])),
            "associations": len(associations),
            "object_fields": sum(len(specs) for specs in object_fields.values()),
        }
        return {**counts, **{name: n for name, n in extra.items() if n}}

    # --- ingest ---------------------------------------------------------------------------------

    def track_event(self, call: Call) -> Answer:
        event = self._body(call, schemas.validate_event)
        self._identifier(event["user"], "body.user")
        self.store.track(event)
        return 200, {"success": True}
