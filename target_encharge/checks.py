"""Start-up checks: what can be known before any record of a stream is sent (its key is there and accepted,
a custom object's schema exists). Each GET is made once per run, whatever the number of streams."""

from __future__ import annotations

import typing as t

from target_encharge.errors import ConfigError
from target_encharge.request import Request
from target_encharge.urls import join_url
from target_encharge.verdicts import Verdict

if t.TYPE_CHECKING:
    from target_encharge.client import Client
    from target_encharge.settings import StreamSettings
    from target_encharge.templates import Template


class StartupChecks:
    """The start-up checks of one run, with what they fetched (the account, the custom object schemas)."""

    def __init__(self, client: Client, api_url: str) -> None:
        self.client, self.api_url = client, api_url
        self._account: t.Any = None
        self._schemas: list[dict] | None = None

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

    def _get(self, path: str) -> t.Any:  # noqa: ANN401
        """A start-up GET on the REST API, with the same retries as any call."""
        request = Request.check(self.api_url + path)
        outcome = self.client.send(request)
        if request.verdict(outcome) is not Verdict.DELIVERED:
            msg = (
                f"GET {path} failed after {outcome.attempts} attempt(s): {outcome.error}; "
                f"is api_url ({self.api_url}) Encharge's REST API?"
            )
            raise ConfigError(msg)
        return outcome.body
