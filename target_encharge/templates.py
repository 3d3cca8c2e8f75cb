"""Encharge's endpoint templates as data: how a record becomes a request, and what it must carry.

Each template says which method and URL a record goes to, how a list of records becomes a body, what a
record needs before it may be sent, and which of its fields identify it (for ordering, logs and dead letters);
and everything else the run asks of its records: their kind, what the ledger knows them by, whether they are
people or events, how Encharge is asked what exists, the custom object schema to check at start-up, how mirror
removes them, and what a 404 or a 409 means for them. Nothing outside this module tests a template's name: a
new template is one entry in :func:`encharge_templates`. The generic `manual` template is built from the
stream's settings the same way.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import hashlib
import re
import types
import typing as t
import urllib.parse

from target_encharge import encoding
from target_encharge.errors import ConfigError
from target_encharge.urls import join_url, require_safe_url
from target_encharge.verdicts import CONFLICT, NO_ANSWERS, NOT_FOUND, Verdict

if t.TYPE_CHECKING:
    from target_encharge.settings import StreamSettings

PERSON_IDS = ("email", "userId", "id")
OBJECT_IDS = ("externalId", "id")
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


Identity = t.Callable[[dict, dict], str | None]  # (record, its `identifiers`) -> its template identity
Ordering = t.Callable[[dict, str], tuple[str, ...]]  # (its `identifiers`, its URL) -> its ordering keys
Kind = t.Literal["person", "tag", "custom object", "event", "manual", "association"]
Lookup = t.Literal["people", "object"]  # how Encharge is asked whether a record's person or object exists
ALL_MODES = ("upsert", "update", "create", "mirror")
# what a refusal's status means (see Template.answers)
REMOVAL_ANSWERS = types.MappingProxyType({NOT_FOUND: Verdict.ABSENT})  # a 404 to a removal: already gone
PERSON_LATER = types.MappingProxyType({NOT_FOUND: Verdict.LATER})  # the person may come later in the run
UPDATE_ON_CONFLICT = types.MappingProxyType({CONFLICT: Verdict.EXISTS})  # a create of what exists: update it


@dataclasses.dataclass(frozen=True, eq=False)
class Template:
    """One Encharge endpoint: record in, request out, and everything the run asks of its records."""

    name: str
    kind: Kind  # what its records are in Encharge
    url: t.Callable[[dict], str]  # the URL a record goes to (KeyError names a missing placeholder field)
    body: t.Callable[[list[dict]], bytes | None]  # records (already filtered) -> request body
    needs: t.Callable[[dict, dict], str | None]  # (record, its `identifiers`) -> why it cannot be sent, or None
    identifiers: t.Callable[[dict], dict]  # the fields that say which person/object a record is
    ordering: Ordering  # the keys that keep calls for the same person or object in input order
    own_identity: Identity = lambda _record, _ids: None  # what the ledger knows it by (None: sent every time)
    method: str = "POST"
    content_type: str = "application/json"
    batchable: bool = False  # the API takes several records in one call
    fixed_url: bool = True  # every record goes to the same URL
    people: bool = False  # its records name people (an email differing only in case is told at the end)
    events: bool = False  # an event with an id is sent once, changed or not
    lookup: Lookup | None = None  # how `update` and `create` ask Encharge what exists
    object_schema: str | None = None  # the custom object schema that must exist before anything is sent
    requires: tuple[str, ...] = ()  # stream settings it cannot do without
    upsert: Template | None = None  # the same records sent to update what exists (custom objects: PUT, one per call)
    destination: str = ""  # where its records land, for the sync ledger: the template and its object name or URL
    removal: t.Callable[[dict, str], Removal] | None = None  # how `mirror` removes what left the source
    modes: tuple[str, ...] = ("upsert",)  # the sync modes it takes
    # what a refusal's status means for its records (a 404 to a tag: its person is not there yet), and for a removal
    answers: t.Mapping[int, Verdict] = dataclasses.field(default_factory=lambda: NO_ANSWERS)
    removal_answers: t.Mapping[int, Verdict] = dataclasses.field(default_factory=lambda: REMOVAL_ANSWERS)
    associates: Association | None = None  # an association's two sides: its URL takes their Encharge ids
    field_owner: str | None = None  # whose fields its records write ("person", or the custom object's schema)
    # add_tag: the single tags one call carries (joined, as Encharge takes them); the ledger holds a row for each
    parts: t.Callable[[dict], list[str]] | None = None

    def identity(self, record: dict, key_properties: t.Sequence[str] = (), ids: dict | None = None) -> str | None:
        """What the sync ledger knows ``record`` by: its stream's key properties when the SCHEMA has them, else
        the template's own (a person by email, case-insensitive, or userId or id; a custom object by
        externalId; a tag by person and tag). None when there is nothing to know it by: an event or a manual
        request without key properties is sent every time it comes. ``ids``: ``identifiers(record)``, when found."""
        if key_properties:
            return _keyed(record, key_properties)
        return _nul_free(self.own_identity(record, self.identifiers(record) if ids is None else ids))

    def part_identities(
        self, record: dict, key_properties: t.Sequence[str] = (), ids: dict | None = None
    ) -> list[tuple[str, str]]:
        """A template with :attr:`parts` (add_tag): what the ledger knows each single tag of ``record`` by, with
        the tag (``email:a@x tag:vip``, or its key properties' ``key:[...] tag:vip``); [] for nothing to know
        it by."""
        if self.parts is None:
            return []
        base = self.part_prefix(record, key_properties, ids)
        return [] if base is None else [(f"{base}{tag}", tag) for tag in self.parts(record)]

    def part_prefix(self, record: dict, key_properties: t.Sequence[str] = (), ids: dict | None = None) -> str | None:
        """What every single tag's identity of ``record``'s person starts with (None: no person to know)."""
        if key_properties:
            return _keyed(record, key_properties) + " tag:"
        person = _nul_free(person_key(self.identifiers(record) if ids is None else ids))
        return None if person is None else f"{person} tag:"

    def ordering_keys(self, ids: dict, url: str) -> tuple[str, ...]:
        """Calls sharing a key are sent in input order: the person (any identifier), the object, the URL.

        ``ids`` is what ``identifiers`` found in the record. An object's key does not name its schema, so a
        manual PATCH of an object waits for the `create_custom_object` call that creates it."""
        return self.ordering(ids, url)


PERSON = "person"  # the object name Encharge's association paths give people
TARGET_IDS = ("targetExternalId", "targetId")  # how an association record names its target


@dataclasses.dataclass(frozen=True)
class Association:
    """The two sides of `add_association`/`remove_association`: the source (`object_name`, default person) and the
    target custom object, and the association between them (its id, or None: the one between the two). Encharge's
    paths take Encharge ids; :meth:`source` and :meth:`target` say how a record names each side."""

    api: str
    object_name: str
    target_object_name: str
    association_id: int | None
    method: str = "POST"

    def source(self, ids: dict) -> tuple[str, str] | None:
        """(object name, identity) of the record's source: a person by email/userId/id, an object by externalId;
        ``id:...`` is an Encharge id already."""
        if self.object_name == PERSON:
            key = person_key({k: v for k, v in ids.items() if k in PERSON_IDS})
        else:
            key = f"externalId:{ids['externalId']}" if "externalId" in ids else None
        return None if key is None else (self.object_name, key)

    def target(self, ids: dict) -> tuple[str, str] | None:
        if "targetExternalId" in ids:
            return self.target_object_name, f"externalId:{ids['targetExternalId']}"
        if "targetId" in ids:
            return self.target_object_name, f"id:{ids['targetId']}"
        return None

    def url(self, source_id: str, target_id: str, association_id: int | None = None) -> str:
        """`POST /objects/{objectName}/{id}/associations/default/{targetObjectName}/{targetId}` (or by the
        association's id); removal: `DELETE /objects/{objectName}/{id}/associations/{associationId}/{targetId}`."""
        quote = functools.partial(urllib.parse.quote, safe="")
        base = f"{self.api}/objects/{quote(self.object_name)}/{quote(source_id)}/associations"
        number = association_id if association_id is not None else self.association_id
        if number is None:
            return f"{base}/default/{quote(self.target_object_name)}/{quote(target_id)}"
        return f"{base}/{number}/{quote(target_id)}"


@dataclasses.dataclass(frozen=True)
class Removal:
    """The request that removes one person, object or tag from Encharge."""

    method: str
    url: str
    body: bytes | None = None


def encharge_ids(identity: str) -> dict:
    """The Encharge identifiers a template identity names (``email:a@x tag:b`` -> email and tag); {} for a key."""
    head, _, link = identity.partition(" link:")
    head, _, tag = head.partition(" tag:")
    name, sep, value = head.partition(":")
    if not sep or name not in (*PERSON_IDS, "externalId"):
        return {}
    target, _, target_value = link.partition(":")
    linked = {target: target_value} if target in TARGET_IDS else {}
    return {name: value, **({"tag": tag} if tag else {}), **linked}


def _person_removal(api: str) -> t.Callable[[dict, str], Removal]:
    """`DELETE /people?people[0][email]=...`: archive, Encharge's preferred way; `delete_action: delete` adds
    `force=true` (the person and their data, for GDPR). One person per call: a 404 then means that one is gone."""

    def removal(ids: dict, action: str) -> Removal:
        name = next(k for k in PERSON_IDS if k in ids)
        query = {f"people[0][{name}]": str(ids[name]), **({"force": "true"} if action == "delete" else {})}
        return Removal("DELETE", f"{api}/people?{urllib.parse.urlencode(query)}")

    return removal


def _object_removal(base: str) -> t.Callable[[dict, str], Removal]:
    def removal(ids: dict, _action: str) -> Removal:
        return Removal("DELETE", f"{base}/externalId/{urllib.parse.quote(str(ids['externalId']), safe='')}")

    return removal


def _tag_removal(api: str) -> t.Callable[[dict, str], Removal]:
    def removal(ids: dict, _action: str) -> Removal:
        person = {k: ids[k] for k in PERSON_IDS if k in ids}
        return Removal("DELETE", f"{api}/tags", encoding.dumps({"tag": ids["tag"], **person}))

    return removal


def _keyed(record: dict, key_properties: t.Sequence[str]) -> str:
    """What the ledger knows a record by when its stream has key properties: their values, as JSON (which writes
    a NUL character escaped)."""
    return "key:" + encoding.dumps(list(map(record.get, key_properties))).decode()


def _nul_free(identity: str | None) -> str | None:
    """An identity as the ledger keeps it: a NUL character (which PostgreSQL text cannot hold) as U+FFFD."""
    return identity.replace("\x00", "\ufffd") if identity is not None and "\x00" in identity else identity


def person_key(ids: t.Mapping[str, t.Any]) -> str | None:
    """One text for the person ``ids`` name, as Encharge matches them: email (any case), else userId, else id."""
    for name in PERSON_IDS:
        if name in ids:
            value = ids[name]
            return f"{name}:{str(value).lower() if name == 'email' else value}"
    return None


def _joined_tags(tag: t.Any) -> str:  # noqa: ANN401
    """A tag field as Encharge's API takes it: a string, or a list joined with commas."""
    if isinstance(tag, list):
        return ",".join(str(x) for x in tag if x not in (None, ""))
    return "" if tag is None else str(tag)


def person_identifiers(record: dict) -> dict:
    """email / userId / id of the record itself: what Encharge matches a person by in /people and /tags."""
    return {k: record[k] for k in PERSON_IDS if record.get(k) not in (None, "")}


def event_identifiers(record: dict) -> dict:
    """The ids an event's `user` is sent with: its own `user` object's, else the record's top-level ones."""
    user = record.get("user")
    ids = {k: user[k] for k in PERSON_IDS if user.get(k) not in (None, "")} if isinstance(user, dict) else {}
    return {**person_identifiers(record), **ids}


def _numeric_id(ids: dict) -> str | None:
    """A number in `id`: a database key, not Encharge's own (text) id of a person; it belongs in userId."""
    value = ids.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        return None
    return (
        f"its id is a number ({value}): Encharge's id is its own; send your key as userId, e.g. with the stream "
        'map `stream_maps: {"<stream>": {"userId": "str(id)", "id": "__NULL__"}}`'
    )


def _needs_person(_record: dict, ids: dict) -> str | None:
    if ids:
        return _numeric_id(ids) if "id" in ids else None
    return "no email, userId or id to say which person it is"


def _needs_tag(record: dict, ids: dict) -> str | None:
    if not _joined_tags(record.get("tag")):
        return "no tag"
    return _needs_person(record, ids)


def _needs_event(record: dict, ids: dict) -> str | None:
    if not isinstance(record.get("name"), str) or not record["name"].strip():
        return "no event name"
    for field in ("user", "properties"):
        if record.get(field) is not None and not isinstance(record[field], dict):
            return f"its '{field}' is not an object"
    if not ("email" in ids or "userId" in ids):
        return "no email or userId for the event's user"
    return _numeric_id(ids)


def _nothing_needed(_record: dict, _ids: dict) -> str | None:
    return None


def single_tags(record: dict) -> list[str]:
    """The distinct tags of a record's `tag` ("vip,beta", or a list), trimmed, in order: one ledger row each."""
    tags: list[str] = []
    for part in _joined_tags(record.get("tag")).split(","):
        tag = part.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _tag_body(records: list[dict]) -> bytes:
    (record,) = records
    return encoding.dumps({"tag": _joined_tags(record["tag"]), **person_identifiers(record)})


def _event_body(records: list[dict]) -> bytes:
    """`{"name", "user", "properties"}`: identify puts the other fields on the person, events in properties."""
    (record,) = records
    rest = dict(record)
    name = rest.pop("name")
    user = dict(rest.pop("user", None) or {})
    properties = dict(rest.pop("properties", None) or {})
    source_ip = rest.pop("sourceIp", None)
    for key in PERSON_IDS:
        if key in rest:
            value = rest.pop(key)
            if value not in (None, "") and user.get(key) in (None, ""):
                user[key] = value
    (user if name == "identify" else properties).update(rest)
    event: dict[str, t.Any] = {"name": name, "user": user}
    if properties:
        event["properties"] = properties
    if source_ip:
        event["sourceIp"] = source_ip
    return encoding.dumps(event)


def _object_identifiers(record: dict) -> dict:
    return {k: record[k] for k in OBJECT_IDS if record.get(k) not in (None, "")}


def _fixed(url: str) -> t.Callable[[dict], str]:
    return lambda _record: url


def url_filler(url: str) -> t.Callable[[dict], str]:
    """Fill ``{field}`` placeholders from the record, percent-encoded so a value never changes the path."""
    fields = PLACEHOLDER.findall(url)
    if not fields:
        return _fixed(url)
    head = urllib.parse.urlsplit(PLACEHOLDER.sub("x", url))
    if PLACEHOLDER.search(url.split("//", 1)[-1].split("/", 1)[0]) or not head.scheme:
        msg = f"url {url!r}: placeholders may only stand in the path or query, not in the scheme or host"
        raise ConfigError(msg)

    def fill(record: dict) -> str:
        def value(match: re.Match) -> str:
            field = match.group(1)
            if record.get(field) in (None, ""):
                raise KeyError(field)
            return urllib.parse.quote(encoding.to_text(record[field]), safe="")

        return PLACEHOLDER.sub(value, url)

    return fill


def placeholder_problem(url: str) -> t.Callable[[dict, dict], str | None]:
    """Why a record cannot fill ``url``: a placeholder with no value, or `.`/`..` in the path (no escaping
    keeps those from moving up the path: HTTP clients and servers read `%2E` as a dot)."""
    fields = PLACEHOLDER.findall(url)
    in_path = PLACEHOLDER.findall(url.split("?", 1)[0])

    def problem(record: dict, _ids: dict) -> str | None:
        missing = [f for f in fields if record.get(f) in (None, "")]
        if missing:
            return f"no value for the URL placeholder(s) {', '.join(missing)}"
        dots = [f for f in in_path if encoding.to_text(record[f]) in (".", "..")]
        return f"the URL placeholder(s) {', '.join(dots)} would be '.' or '..' in the path" if dots else None

    return problem


def _manual_body(content_type: str, *, batched: bool) -> t.Callable[[list[dict]], bytes | None]:
    if content_type == "application/x-ndjson":
        return encoding.dumps_lines
    if content_type == "application/x-www-form-urlencoded":

        def form(records: list[dict]) -> bytes:
            (record,) = records
            pairs = [(k, encoding.to_text(v)) for k, v in record.items() if v is not None]
            return urllib.parse.urlencode(pairs).encode()

        return form
    if batched:
        return encoding.dumps
    return lambda records: encoding.dumps(records[0])


def _manual_destination(method: str, url: str) -> str:
    """A manual stream's destination for the sync ledger: method, scheme, host and path, and a digest of the whole
    URL (its query may hold a token, which the ledger must never keep)."""
    parts = urllib.parse.urlsplit(url)
    digest = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
    return f"manual {method} {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path} #{digest}"


def _manual(settings: StreamSettings, api_url: str) -> Template:
    if not settings.url:
        msg = f"stream '{settings.stream}': endpoint 'manual' needs url"
        raise ConfigError(msg)
    if settings.batch_records and settings.content_type == "application/x-www-form-urlencoded":
        msg = f"stream '{settings.stream}': form-encoded bodies hold one record; turn batch_records off"
        raise ConfigError(msg)
    url = join_url(api_url, settings.url)
    require_safe_url(url, f"stream '{settings.stream}': url")
    fill = url_filler(url)
    fields = PLACEHOLDER.findall(url)

    def identifiers(record: dict) -> dict:
        ids = person_identifiers(record)
        ids.update({f: record[f] for f in fields if f in record})
        ids.update(_object_identifiers(record))
        return ids

    def ordering(ids: dict, url: str) -> tuple[str, ...]:  # the person, the object, and a URL of its own
        return (*_person_keys(ids, url), *_object_keys(ids, url), *((url,) if fields else ()))

    body = _manual_body(settings.content_type, batched=settings.batch_records)
    return Template(
        name="manual",
        kind="manual",
        destination=_manual_destination(settings.method, url),
        method=settings.method,
        url=fill,
        body=(lambda _records: None) if settings.method == "GET" else body,
        content_type=settings.content_type,
        needs=placeholder_problem(url),
        identifiers=identifiers,
        ordering=ordering,
        batchable=settings.batch_records and settings.method != "GET",  # (a form with batch_records is refused)
        fixed_url=not fields,
    )


def _association_identifiers(record: dict) -> dict:
    """The source's identifiers (a person's, or an object's externalId) and the target's."""
    ids = person_identifiers(record)
    ids.update({k: record[k] for k in ("externalId", *TARGET_IDS) if record.get(k) not in (None, "")})
    return ids


def _needs_association(association: Association) -> t.Callable[[dict, dict], str | None]:
    def needs(_record: dict, ids: dict) -> str | None:
        if association.source(ids) is None:
            if association.object_name == PERSON:
                return "no email, userId or id to say which person it is"
            return f"no externalId to say which {association.object_name} it is"
        if association.target(ids) is None:
            return f"no targetExternalId or targetId to say which {association.target_object_name} it links to"
        return _numeric_id(ids) if association.object_name == PERSON else None

    return needs


def _association_identity(association: Association) -> Identity:
    def identity(_record: dict, ids: dict) -> str | None:
        source, target = association.source(ids), association.target(ids)
        if source is None or target is None:
            return None
        name, _, value = target[1].partition(":")
        return f"{source[1]} link:target{name[:1].upper()}{name[1:]}:{value}"

    return identity


def _association_keys(ids: dict, url: str) -> tuple[str, ...]:
    """The source person or object, and the target object (waiting for the calls that create them)."""
    target = {k[len("target") :][:1].lower() + k[len("target") + 1 :]: v for k, v in ids.items() if k in TARGET_IDS}
    return (*_person_keys(ids, url), *_object_keys(ids, url), *_object_keys(target, url))


def _unsubscribe_url(api: str) -> t.Callable[[dict], str]:
    """`POST /people/unsubscribe?email=...` (or userId, id): one person per call."""

    def url(record: dict) -> str:
        ids = person_identifiers(record)
        name = next(k for k in PERSON_IDS if k in ids)
        return f"{api}/people/unsubscribe?{urllib.parse.urlencode({name: encoding.to_text(ids[name])})}"

    return url


def _association_removal(association: Association) -> t.Callable[[dict, str], Removal]:
    """`DELETE /objects/{objectName}/{id}/associations/{associationId}/{targetId}`, as data: the sides named by
    their identities (the run, which knows Encharge's ids and the association's, binds one that fills them in)."""

    def removal(ids: dict, _action: str) -> Removal:
        source, target = association.source(ids), association.target(ids)
        shown = [f"{{{side[1]}}}" if side else "{unknown}" for side in (source, target)]
        number = association.association_id if association.association_id is not None else "{associationId}"
        base = f"{association.api}/objects/{urllib.parse.quote(association.object_name, safe='')}"
        return Removal("DELETE", f"{base}/{shown[0]}/associations/{number}/{shown[1]}")

    return removal


def _association_templates(
    api: str, object_name: str | None, target_object_name: str | None, association_id: int | None
) -> list[Template]:
    association = Association(api, object_name or PERSON, target_object_name or "", association_id)
    add = Template(
        name="add_association",
        kind="association",
        url=_fixed(f"{api}/objects/{urllib.parse.quote(association.object_name, safe='')}"),
        body=lambda _records: None,
        needs=_needs_association(association),
        identifiers=_association_identifiers,
        own_identity=_association_identity(association),
        ordering=_association_keys,
        people=association.object_name == PERSON,
        requires=("target_object_name",),
        destination=f"add_association {association.object_name} {association.target_object_name}"
        + (f" #{association_id}" if association_id is not None else ""),
        removal=_association_removal(association),
        modes=("upsert", "mirror"),
        answers=PERSON_LATER,  # (a person or object not there yet: once more at the end)
        associates=association,
    )
    remove = dataclasses.replace(
        add,
        name="remove_association",
        removal=None,
        method="DELETE",
        destination=add.destination.replace("add_", "remove_", 1),
        modes=("upsert",),
        associates=dataclasses.replace(association, method="DELETE"),
    )
    return [add, remove]


def template_for(settings: StreamSettings, api_url: str, ingest_url: str) -> Template:
    """The template a stream is routed to, bound to its settings (refused when it cannot take its sync mode)."""
    template = _template_for(settings, api_url, ingest_url)
    if settings.sync_mode not in template.modes:
        msg = (
            f"stream '{settings.stream}': sync_mode '{settings.sync_mode}' is not possible with "
            f"{template.name} (it takes {', '.join(template.modes)})"
        )
        raise ConfigError(msg)
    return template


def _template_for(settings: StreamSettings, api_url: str, ingest_url: str) -> Template:
    endpoint = settings.endpoint
    if endpoint == "manual":
        return _manual(settings, api_url)
    templates = {
        template.name: template
        for template in encharge_templates(
            api_url,
            ingest_url,
            settings.object_name or "",
            target_object_name=settings.target_object_name,
            association_id=settings.association_id,
        )
    }
    if endpoint not in templates:
        msg = f"stream '{settings.stream}': unknown endpoint {endpoint!r}"
        raise ConfigError(msg)
    template = templates[endpoint]
    for setting in template.requires:
        if not getattr(settings, setting):
            msg = f"stream '{settings.stream}': endpoint '{endpoint}' needs {setting}"
            raise ConfigError(msg)
    return template


def encharge_templates(
    api_url: str,
    ingest_url: str,
    object_name: str,
    *,
    target_object_name: str | None = None,
    association_id: int | None = None,
) -> list[Template]:
    """Encharge's templates (all but `manual`), bound to the REST API, Ingest and a stream's custom object (and,
    for associations, its target object and association)."""
    api = api_url.rstrip("/")
    objects = f"{api}/objects/{urllib.parse.quote(object_name, safe='')}"
    tag = Template(
        name="add_tag",
        kind="tag",
        url=_fixed(f"{api}/tags"),
        body=_tag_body,
        needs=_needs_tag,
        identifiers=person_identifiers,
        own_identity=_tag_identity,
        ordering=_person_keys,
        people=True,
        answers=PERSON_LATER,
    )  # (from another stream)
    create_object = Template(
        name="create_custom_object",
        kind="custom object",
        url=_fixed(objects),
        body=encoding.dumps,
        needs=_nothing_needed,
        identifiers=_object_identifiers,
        own_identity=_object_identity,
        ordering=_object_keys,
        batchable=True,
        lookup="object",
        object_schema=object_name,
        requires=("object_name",),
        field_owner=object_name,
        destination=f"create_custom_object {object_name}",
        removal=_object_removal(objects),
        modes=ALL_MODES,
        answers=UPDATE_ON_CONFLICT,  # updated by externalId instead, one per call
    )
    return [
        Template(
            name="create_or_update_person",
            kind="person",
            url=_fixed(f"{api}/people"),
            body=encoding.dumps,
            needs=_needs_person,
            identifiers=person_identifiers,
            own_identity=_person_identity,
            ordering=_person_keys,
            batchable=True,
            people=True,
            lookup="people",
            field_owner="person",
            destination="create_or_update_person",
            removal=_person_removal(api),
            modes=ALL_MODES,
        ),
        dataclasses.replace(
            tag, destination="add_tag", removal=_tag_removal(api), modes=("upsert", "mirror"), parts=single_tags
        ),
        dataclasses.replace(tag, name="remove_tag", destination="remove_tag", method="DELETE"),
        dataclasses.replace(
            create_object,
            upsert=dataclasses.replace(
                create_object, method="PUT", body=_one_object, batchable=False, answers=NO_ANSWERS
            ),
        ),
        Template(
            name="track_event",
            kind="event",
            url=_fixed(ingest_url),
            body=_event_body,
            needs=_needs_event,
            identifiers=event_identifiers,
            ordering=_person_keys,
            people=True,
            events=True,
            destination="track_event",
        ),
        Template(
            name="unsubscribe_person",
            kind="person",
            url=_unsubscribe_url(api),
            body=lambda _records: None,
            needs=_needs_person,
            identifiers=person_identifiers,
            own_identity=_person_identity,
            ordering=_person_keys,
            fixed_url=False,
            people=True,
            destination="unsubscribe_person",
            answers=PERSON_LATER,  # (the person may come later in the run)
        ),
        *_association_templates(api, object_name or None, target_object_name, association_id),
    ]


def _one_object(records: list[dict]) -> bytes:
    """`PUT /objects/{name}` takes one object, not an array."""
    (record,) = records
    return encoding.dumps(record)


def _person_identity(_record: dict, ids: dict) -> str | None:
    return person_key(ids)


def _tag_identity(record: dict, ids: dict) -> str | None:
    person = person_key(ids)
    return None if person is None else f"{person} tag:{_joined_tags(record.get('tag'))}"


def _object_identity(_record: dict, ids: dict) -> str | None:
    return f"externalId:{ids['externalId']}" if "externalId" in ids else None


def _person_keys(ids: dict, _url: str) -> tuple[str, ...]:
    return tuple([f"{k}:{str(v).lower() if k == 'email' else v}" for k, v in ids.items() if k in PERSON_IDS])


def _object_keys(ids: dict, _url: str) -> tuple[str, ...]:
    return tuple(f"object {k}:{v}" for k, v in ids.items() if k in OBJECT_IDS)
