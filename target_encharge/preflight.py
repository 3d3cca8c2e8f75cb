"""Start-up checks: what can be known before any record of a stream is sent (its key is there and accepted,
a custom object's schema exists). Each GET is made once per run, whatever the number of streams."""

from __future__ import annotations

import logging
import typing as t

from target_encharge import encoding
from target_encharge.errors import ConfigError
from target_encharge.fields import FieldContract, field_spec
from target_encharge.request import Request
from target_encharge.urls import join_url
from target_encharge.verdicts import Verdict

logger = logging.getLogger("target_encharge")

if t.TYPE_CHECKING:
    from target_encharge.client import Client
    from target_encharge.settings import StreamSettings
    from target_encharge.templates import Template


class Preflight:
    """The start-up checks of one run, with what they fetched (the account, the custom object schemas)."""

    def __init__(self, client: Client, api_url: str) -> None:
        self.client, self.api_url = client, api_url
        self._account: t.Any = None
        self._schemas: list[dict] | None = None
        self._person_fields: list[dict] | None = None
        self._told: set[tuple[str, str]] = set()  # (stream, what): each named once per run

    def before_sending(self, stream: str, template: Template, settings: StreamSettings) -> None:
        """Raise ConfigError when ``stream`` cannot be sent: a missing or refused key, an unknown object_name."""
        url = template.url({}) if template.fixed_url else join_url(self.api_url, settings.url or "")
        credential = self.client.credentials.for_url(url)
        if credential and not credential.key:
            msg = f"stream '{stream}' ({template.name}) needs {credential.setting} ({credential.description})"
            raise ConfigError(msg)
        if credential and credential.setting == "api_key":
            self.account()
        association = template.associates
        for side in (association.object_name, association.target_object_name) if association else ():
            if side != "person" and side not in self.schemas():
                msg = (
                    f"stream '{stream}': {side!r} is not a custom object schema of this Encharge account (names "
                    f"are case-sensitive); the account has: {', '.join(map(repr, self.schemas())) or 'none'}"
                )
                raise ConfigError(msg)
        object_name = template.object_schema
        if object_name:
            schemas = self.schemas()
            if object_name not in schemas:
                msg = (
                    f"stream '{stream}': object_name {object_name!r} is not a custom object schema of this "
                    f"Encharge account (names are case-sensitive); the account has: "
                    f"{', '.join(map(repr, schemas)) or 'none'}"
                )
                raise ConfigError(msg)

    def account(self) -> t.Any:  # noqa: ANN401
        """`GET /accounts/info` (once): the account the API key belongs to; a refused key stops the run."""
        if self._account is None:
            self._account = self._get("/accounts/info") or {}
        return self._account

    def schemas(self) -> list[str]:
        """The names of the account's custom object schemas."""
        return [o["name"] for o in self.schema_list()]

    def schema_list(self) -> list[dict]:
        """`GET /schemas` (once): the account's custom object schemas, with their fields and associations."""
        if self._schemas is None:
            body = self._get("/schemas")
            objects = body.get("objects", []) if isinstance(body, dict) else []
            self._schemas = [o for o in objects if isinstance(o, dict) and isinstance(o.get("name"), str)]
        return self._schemas

    # the field contract (issue 24)

    def person_fields(self) -> list[dict]:
        """`GET /fields` (once): the account's person fields."""
        if self._person_fields is None:
            body = self._get("/fields")
            items = body.get("items", []) if isinstance(body, dict) else []
            self._person_fields = [f for f in items if isinstance(f, dict)]
        return self._person_fields

    def fields_of(self, owner: str) -> list[dict]:
        """The fields of "person" or of a custom object schema, as the account lists them."""
        if owner == "person":
            return self.person_fields()
        schema = next((o for o in self.schema_list() if o["name"] == owner), {})
        return [f for f in schema.get("fields") or () if isinstance(f, dict)]

    def contract_of(
        self, stream: str, template: Template, schema: dict, exclude: t.Collection[str] = ()
    ) -> FieldContract | None:
        """``stream``'s fields (less ``exclude``, never sent) against the account's as they are (nothing created,
        nothing logged)."""
        owner = template.field_owner
        if owner is None:
            return None
        properties = {k: v for k, v in (schema.get("properties") or {}).items() if k not in exclude}
        keep = template.identifiers(dict.fromkeys(properties, "x"))
        return FieldContract.of(stream, owner, self.fields_of(owner), properties, keep)

    def field_contract(
        self, stream: str, template: Template, schema: dict, *, create: bool, exclude: t.Collection[str] = ()
    ) -> FieldContract | None:
        """``stream``'s fields against the account's (None: its template writes no fields). Fields Encharge lacks
        are created first (``create``) or named, once; read-only ones named, once."""
        try:
            contract = self.contract_of(stream, template, schema, exclude)
        except ConfigError as exc:  # an API that does not list its fields: sent as they are, said once
            if (stream, "unread") not in self._told:
                self._told.add((stream, "unread"))
                logger.warning("Stream '%s': the account's fields could not be read (%s); none is checked", stream, exc)
            return None
        if contract is None:
            return None
        owner, properties = contract.owner, schema.get("properties") or {}
        shown = "person fields" if owner == "person" else f"{owner} fields"
        if contract.missing and create:
            specs = [field_spec(name, properties[name]) for name in contract.missing]
            path = "/fields" if owner == "person" else f"/schemas/{owner}/fields"
            self._post(path, specs)
            for spec in specs:
                logger.info("Stream '%s': created the %s field '%s' (%s)", stream, owner, spec["name"], spec["type"])
            self._person_fields = None if owner == "person" else self._person_fields
            self._schemas = None if owner != "person" else self._schemas
            contract = self.contract_of(stream, template, schema, exclude)
            if contract is None:
                return None
        if contract.missing and (stream, "missing") not in self._told:
            self._told.add((stream, "missing"))
            logger.warning(
                "Stream '%s' sends field(s) the account's %s lack: %s; Encharge may drop them "
                "(create_missing_fields: true creates them first)",
                stream,
                shown,
                ", ".join(contract.missing),
            )
        if contract.read_only and (stream, "read-only") not in self._told:
            self._told.add((stream, "read-only"))
            logger.warning(
                "Stream '%s': %s %s read-only in Encharge: left out of what is sent",
                stream,
                ", ".join(sorted(contract.read_only)),
                "is" if len(contract.read_only) == 1 else "are",
            )
        return contract

    def _post(self, path: str, body: t.Any) -> t.Any:  # noqa: ANN401
        request = Request(
            stream="",
            endpoint="lookup",
            method="POST",
            url=self.api_url + path,
            content_type="application/json",
            headers={},
            body=encoding.dumps(body),
        )
        outcome = self.client.send(request)
        if request.verdict(outcome) is not Verdict.DELIVERED:
            msg = f"POST {path} failed after {outcome.attempts} attempt(s): {outcome.error}"
            raise ConfigError(msg)
        return outcome.body

    def _get(self, path: str) -> t.Any:  # noqa: ANN401
        """A start-up GET on the REST API, with the same retries as any call."""
        request = Request.lookup(self.api_url + path)
        outcome = self.client.send(request)
        if request.verdict(outcome) is not Verdict.DELIVERED:
            msg = (
                f"GET {path} failed after {outcome.attempts} attempt(s): {outcome.error}; "
                f"is api_url ({self.api_url}) Encharge's REST API?"
            )
            raise ConfigError(msg)
        return outcome.body
