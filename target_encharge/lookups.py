"""Asking Encharge what exists, for the `update` and `create` sync modes: people by email, userId or id
(`GET /people?people[0][email]=...&people[1][userId]=...`, several per call), custom objects by externalId
(`GET /objects/{name}/externalId/{externalId}`, one per call; 404 means there is none)."""

from __future__ import annotations

import types
import typing as t
import urllib.parse

from target_encharge.errors import EnchargeTargetError
from target_encharge.request import Request
from target_encharge.templates import PERSON_IDS, person_key
from target_encharge.verdicts import NOT_FOUND, Verdict

if t.TYPE_CHECKING:
    from target_encharge.client import Client
    from target_encharge.request import Entry
    from target_encharge.templates import Template

PEOPLE_PER_LOOKUP = 50  # people named in one GET (the URL stays well under common limits)
LOOKUP_ANSWERS = types.MappingProxyType({NOT_FOUND: Verdict.ABSENT})  # a 404: there is none


class EnchargeLookupError(EnchargeTargetError):
    """Encharge could not say whether a person or an object exists."""


class Lookups:
    """What exists in the Encharge account, asked with the run's client (its retries, its rate limit)."""

    def __init__(self, client: Client, api_url: str) -> None:
        self.client, self.api_url = client, api_url.rstrip("/")

    def people(self, people: t.Sequence[t.Mapping[str, t.Any]]) -> list[bool]:
        """For each person (their email/userId/id), whether Encharge has them."""
        found: set[str] = set()
        for start in range(0, len(people), PEOPLE_PER_LOOKUP):
            chunk = people[start : start + PEOPLE_PER_LOOKUP]
            query = []
            for i, ids in enumerate(chunk):
                name = next((k for k in PERSON_IDS if ids.get(k) not in (None, "")), None)
                if name is not None:
                    query.append((f"people[{i}][{name}]", str(ids[name])))
            if not query:
                continue
            body = self._get(f"{self.api_url}/people?{urllib.parse.urlencode(query)}", "people")
            for user in (body or {}).get("users", []) if isinstance(body, dict) else []:
                if isinstance(user, dict):
                    found.update(k for k in (person_key({n: user[n]}) for n in PERSON_IDS if user.get(n)) if k)
        return [
            any(person_key({n: ids[n]}) in found for n in PERSON_IDS if ids.get(n) not in (None, "")) for ids in people
        ]

    def exist(self, template: Template, entries: t.Sequence[Entry]) -> list[bool]:
        """For each entry, whether its person or custom object is in Encharge (as ``template.lookup`` asks)."""
        if template.lookup == "object":
            return self.objects(template.url({}), [e.ids.get("externalId") for e in entries])
        return self.people([e.ids for e in entries])

    def objects(self, objects_url: str, external_ids: t.Sequence[t.Any]) -> list[bool]:
        """For each externalId, whether the custom object exists."""
        return [
            self._get(f"{objects_url}/externalId/{urllib.parse.quote(str(e), safe='')}", "object") is not None
            for e in external_ids
        ]

    def _get(self, url: str, what: str) -> t.Any:  # noqa: ANN401
        """The body of a lookup; None for a 404 (nothing there)."""
        request = Request.check(url, LOOKUP_ANSWERS)
        outcome = self.client.send(request)
        judged = request.verdict(outcome)
        if judged is Verdict.DELIVERED:
            return outcome.body if outcome.body is not None else {}
        if judged is Verdict.ABSENT:
            return None
        msg = f"could not ask Encharge which {what} exist (GET {urllib.parse.urlsplit(url).path}): {outcome.error}"
        raise EnchargeLookupError(msg)
