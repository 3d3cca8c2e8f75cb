"""Request body schemas of the sandbox, written from what Encharge's OpenAPI document says.

Only the shapes the sandbox checks are here: people (EndUser), tag bodies (tag + EndUserIdentifiers),
custom objects (ICustomObjectCreatable), fields (IPersonField), association definitions
(CustomObjectSchemaAssociationCreatable), Ingest events, and the sandbox's own settings (faults, options, seed).
They are compiled once with fastjsonschema, so a check costs microseconds per request.
"""

from __future__ import annotations

from typing import Any, Callable

import fastjsonschema

#: Person identifiers, in the order Encharge matches people by them.
IDENTIFIERS = ("id", "userId", "email")

_STRING_OR_NULL = {"type": ["string", "null"]}

#: EndUser: identifiers and names are strings; any other field is a person field.
#: A null identifier counts as absent; tags (not documented on EndUser) may be "a,b" or ["a", "b"].
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": _STRING_OR_NULL,
        "userId": _STRING_OR_NULL,
        "email": _STRING_OR_NULL,
        "name": _STRING_OR_NULL,
        "firstName": _STRING_OR_NULL,
        "lastName": _STRING_OR_NULL,
        "tags": {"type": ["string", "array", "null"], "items": {"type": "string"}},
    },
}

#: POST /v1/people: "Array of EndUser objects."
PEOPLE: dict[str, Any] = {"type": "array", "items": PERSON}

#: POST and DELETE /v1/tags: {"tag": "a,b"} together with EndUserIdentifiers.
TAG: dict[str, Any] = {
    "type": "object",
    "required": ["tag"],
    "properties": {
        "tag": {"type": "string"},
        "id": _STRING_OR_NULL,
        "userId": _STRING_OR_NULL,
        "email": _STRING_OR_NULL,
    },
}

#: ICustomObjectCreatable: externalId is a string, id a number, other fields are the object's fields.
CUSTOM_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {"externalId": {"type": "string"}, "id": {"type": "number"}},
}

#: POST /v1/objects/{objectName}: an array of objects to create.
CUSTOM_OBJECTS: dict[str, Any] = {"type": "array", "items": CUSTOM_OBJECT}

#: IPersonField (CustomObjectField is the same): name and type required, no other keys than its own.
FIELD: dict[str, Any] = {
    "type": "object",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "type": {"enum": ["string", "number", "boolean", "integer", "any"]},
        "format": {"enum": ["date", "date-time", None]},
        "displayType": {
            "enum": [
                "text",
                "textarea",
                "date",
                "datetime",
                "number",
                "select",
                "multiselect",
                "checkbox",
                "radio",
                "email",
                "url",
                "phone",
                "integer",
                "decimal",
                "currency",
                "currencyCents",
            ]
        },
        "readOnly": {"type": "boolean"},
        "tooltip": {"type": "string"},
        "icon": {"type": "string"},
        "array": {"type": "boolean"},
        "enum": {"type": "array", "items": {"type": "string"}},
        "enumNames": {"type": "array", "items": {"type": "string"}},
        "allowNewEnumValues": {"type": "boolean"},
        "canMapFrom": {"type": "boolean"},
        "firstClassField": {"type": "boolean"},
        "createdBy": {"type": "string"},
    },
}

#: POST /v1/fields and POST /v1/schemas/{objectName}/fields: an array of fields to create.
FIELDS: dict[str, Any] = {"type": "array", "items": FIELD}

#: POST /v1/schemas/associations: CustomObjectSchemaAssociationCreatable.
ASSOCIATION: dict[str, Any] = {
    "type": "object",
    "required": ["type", "fromObject", "toObject"],
    "properties": {
        "type": {"enum": ["1:1", "1:M", "M:M"]},
        "fromObject": {"type": "string", "minLength": 1},
        "toObject": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
    },
}

#: POST to the Ingest URL: one event, done by one person.
EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["name", "user"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "user": PERSON,
        "properties": {"type": ["object", "null"]},
        "sourceIp": {"type": "string"},
    },
}

#: POST /_sandbox/faults: the fault settings, each optional; rate_limit null (or 0) removes the limit.
FAULTS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "latency_ms": {"type": "number", "minimum": 0},
        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "drop_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "rate_limit": {"type": ["number", "null"], "minimum": 0},
        "retry_after": {"type": "number", "minimum": 0},
    },
}


#: POST /_sandbox/options: the sandbox's modes, each optional.
OPTIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"duplicate_objects": {"type": "boolean"}},
}

#: POST /_sandbox/field-policy: what the account does with fields it does not have.
FIELD_POLICY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"drop_unknown_fields": {"type": "boolean"}},
}

#: One link to seed: the source by its Encharge id or identifiers (a person's email/userId, an object's
#: externalId), the target by targetId or targetExternalId; associationId optional (the default association).
SEED_ASSOCIATION: dict[str, Any] = {
    "type": "object",
    "required": ["objectName", "targetObjectName"],
    "additionalProperties": False,
    "properties": {
        "objectName": {"type": "string", "minLength": 1},
        "targetObjectName": {"type": "string", "minLength": 1},
        "associationId": {"type": "number"},
        "id": {"type": ["string", "number"]},
        "email": {"type": "string"},
        "userId": {"type": "string"},
        "externalId": {"type": "string"},
        "targetId": {"type": ["string", "number"]},
        "targetExternalId": {"type": "string"},
    },
}

#: POST /_sandbox/seed: what a flow or another tool put in the account, each part optional.
SEED: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "people": PEOPLE,
        "tags": {"type": "array", "items": TAG},
        "objects": {"type": "object", "additionalProperties": CUSTOM_OBJECTS},
        "fields": FIELDS,
        "object_fields": {"type": "object", "additionalProperties": FIELDS},
        "associations": {"type": "array", "items": SEED_ASSOCIATION},
    },
}


class BodyError(ValueError):
    """A request body that does not match its schema; the message says where and what."""


def _compile(schema: dict[str, Any]) -> Callable[[Any], None]:
    check = fastjsonschema.compile(schema)

    def validate(body: object) -> None:
        try:
            check(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            # fastjsonschema calls the document "data"; users know it as the request body.
            raise BodyError(
                "body" + exc.message[len("data") :] if exc.message.startswith("data") else exc.message
            ) from None

    return validate


validate_people = _compile(PEOPLE)
validate_person = _compile(PERSON)
validate_tag = _compile(TAG)
validate_custom_object = _compile(CUSTOM_OBJECT)
validate_custom_objects = _compile(CUSTOM_OBJECTS)
validate_event = _compile(EVENT)
validate_fields = _compile(FIELDS)
validate_association = _compile(ASSOCIATION)
validate_field_policy = _compile(FIELD_POLICY)
validate_faults = _compile(FAULTS)
validate_options = _compile(OPTIONS)
validate_seed = _compile(SEED)


def identifiers(person: dict[str, Any]) -> dict[str, str]:
    """The non-empty identifiers of a person body, in matching order."""
    return {key: person[key] for key in IDENTIFIERS if person.get(key)}


def require_identifier(person: dict[str, Any], where: str = "body") -> dict[str, str]:
    """The identifiers of a person body; a BodyError when it has none."""
    found = identifiers(person)
    if not found:
        raise BodyError(f"{where} needs at least one of id, userId, email to identify the person")
    return found
