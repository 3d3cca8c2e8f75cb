"""Asking Encharge what exists, for the `update` and `create` sync modes: people by email, userId or id
(`GET /people?people[0][email]=...&people[1][userId]=...`, several per call), custom objects by externalId
(`GET /objects/{name}/externalId/{externalId}`, one per call; 404 means there is none).

Each lookup URL stays within ``MAX_LOOKUP_URL`` characters (servers answer 414 past their limit, often 8 KB):
a call names fewer people when their identifiers are long, and a record whose identifier alone is too long for
any lookup is answered with the reason (a text), so it fails alone and the rest of the batch goes on."""

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

PEOPLE_PER_LOOKUP = 50  # most people named in one GET
MAX_LOOKUP_URL = 6000  # characters of a lookup URL: well within the 8 KB request line many servers allow
LOOKUP_ANSWERS = types.MappingProxyType({NOT_FOUND: Verdict.ABSENT})  # a 404: there is none

Found = t.Union[bool, str]  # whether it exists; a text: why Encharge cannot be asked about it


class EnchargeLookupError(EnchargeTargetError):
    """Encharge could not say whether a person or an object exists."""


def _too_long(what: str, length: int) -> str:
    return (
        f"its {what} is too long to ask Encharge whether it exists (a lookup URL of {length:,} characters, "
        f"more than {MAX_LOOKUP_URL:,})"
    )


class Lookups:
    """What exists in the Encharge account, asked with the run's client (its retries, its rate limit)."""

    def __init__(self, client: Client, api_url: str) -> None:
        self.client, self.api_url = client, api_url.rstrip("/")

    def people(self, people: t.Sequence[t.Mapping[str, t.Any]]) -> list[Found]:
        """For each person (their email/userId/id), whether Encharge has them; a text for one whose identifiers
        are each too long for a lookup URL."""
        base = f"{self.api_url}/people?"
        answers: list[Found] = [False] * len(people)
        asked: list[int] = []  # the people named in the call being made up
        query: list[str] = []  # its parts, each `people[i][name]=value`, encoded
        length = len(base)
        found: set[str] = set()

        def ask() -> None:
            nonlocal length
            if query:
                found.update(self._found_people(base + "&".join(query)))
            asked.clear()
            query.clear()
            length = len(base)

        for n, ids in enumerate(people):
            names = [k for k in PERSON_IDS if ids.get(k) not in (None, "")]
            if not names:
                continue
            if len(asked) == PEOPLE_PER_LOOKUP:
                ask()
            part = self._fitting(len(asked), ids, names, MAX_LOOKUP_URL - length - (1 if query else 0))
            if part is None and query:  # the call is full: ask it, and name this person first in the next
                ask()
                part = self._fitting(0, ids, names, MAX_LOOKUP_URL - length)
            if part is None:  # too long even alone
                shortest = min(len(self._part(0, name, ids[name])) for name in names)
                answers[n] = _too_long(" and ".join(names), len(base) + shortest)
                continue
            asked.append(n)
            length += len(part) + (1 if query else 0)
            query.append(part)
        ask()
        for n, ids in enumerate(people):
            if answers[n] is False:
                answers[n] = any(person_key({k: ids[k]}) in found for k in PERSON_IDS if ids.get(k) not in (None, ""))
        return answers

    @staticmethod
    def _part(index: int, name: str, value: t.Any) -> str:  # noqa: ANN401
        return urllib.parse.urlencode([(f"people[{index}][{name}]", str(value))])

    def _fitting(self, index: int, ids: t.Mapping[str, t.Any], names: list[str], room: int) -> str | None:
        """The first of the person's identifiers whose query part fits in ``room`` characters."""
        for name in names:
            part = self._part(index, name, ids[name])
            if len(part) <= room:
                return part
        return None

    def _found_people(self, url: str) -> set[str]:
        body = self._get(url, "people")
        found: set[str] = set()
        for user in (body or {}).get("users", []) if isinstance(body, dict) else []:
            if isinstance(user, dict):
                found.update(k for k in (person_key({n: user[n]}) for n in PERSON_IDS if user.get(n)) if k)
        return found

    def exist(self, template: Template, entries: t.Sequence[Entry]) -> list[Found]:
        """For each entry, whether its person or custom object is in Encharge (as ``template.lookup`` asks); a
        text for one too long to be asked about."""
        if template.lookup == "object":
            return self.objects(template.url({}), [e.ids.get("externalId") for e in entries])
        return self.people([e.ids for e in entries])

    def objects(self, objects_url: str, external_ids: t.Sequence[t.Any]) -> list[Found]:
        """For each externalId, whether the custom object exists (a text for one too long for a lookup URL)."""
        answers: list[Found] = []
        for external_id in external_ids:
            url = f"{objects_url}/externalId/{urllib.parse.quote(str(external_id), safe='')}"
            if len(url) > MAX_LOOKUP_URL:
                answers.append(_too_long("externalId", len(url)))
            else:
                answers.append(self._get(url, "object") is not None)
        return answers

    def _get(self, url: str, what: str) -> t.Any:  # noqa: ANN401
        """The body of a lookup; None for a 404 (nothing there)."""
        request = Request.lookup(url, LOOKUP_ANSWERS)
        outcome = self.client.send(request)
        judged = request.verdict(outcome)
        if judged is Verdict.DELIVERED:
            return outcome.body if outcome.body is not None else {}
        if judged is Verdict.ABSENT:
            return None
        msg = f"could not ask Encharge which {what} exist (GET {urllib.parse.urlsplit(url).path}): {outcome.error}"
        raise EnchargeLookupError(msg)
