"""Encharge's own ids of people and custom objects, which its association paths take: learnt from what person and
object upserts answered, kept in the sync ledger (per account, object name and identity), and else asked for
(`GET /people?people[0][email]=...`, several per call; `GET /objects/{name}/externalId/{id}`), remembered.

:class:`Associations` makes an association record's URL from them: at once when both sides' ids are known, else
the record waits for the end of the run (after every person and object of the run was answered), when the ids
still unknown are looked up together.
"""

from __future__ import annotations

import logging
import threading
import typing as t
import urllib.parse

from target_encharge.request import Request
from target_encharge.templates import PERSON, PERSON_IDS, Removal, person_key
from target_encharge.verdicts import NOT_FOUND, Verdict

if t.TYPE_CHECKING:
    from target_encharge.client import Client
    from target_encharge.ledger import SyncLedger
    from target_encharge.outbox import Route
    from target_encharge.request import Entry, Outcome
    from target_encharge.templates import Association, Template

logger = logging.getLogger("target_encharge")

Ref = tuple[str, str]  # (object name, identity): ("person", "email:ann@example.com"), ("company", "externalId:acme")
PEOPLE_PER_LOOKUP = 50  # people named in one GET
_ABSENT = {NOT_FOUND: Verdict.ABSENT}


class EnchargeIds:
    """The Encharge ids this run knows, thread-safe: workers learn them from answers while the reader asks."""

    def __init__(self, client: Client | None, api_url: str, ledger: SyncLedger | None, *, writes: bool) -> None:
        self.client, self.api_url, self.ledger, self.writes = client, api_url.rstrip("/"), ledger, writes
        self.account: str | None = None  # the REST account (set when a stream opens)
        self._known: dict[Ref, str] = {}
        self._unwritten: dict[Ref, str] = {}
        self._asked: set[Ref] = set()  # looked up in the ledger already (found or not)
        self._stale: set[Ref] = set()  # ids a 404 said may be gone: out of the ledger at the end
        self._lock = threading.Lock()

    def learn(self, request: Request, outcome: Outcome) -> None:
        """What an answer says of Encharge ids: a person or object upsert answered 2xx gives them (a long answer is
        cut, and gives none: those are looked up when needed); a 404 to an association says an id it used may be
        gone (the person deleted and created again): forgotten, asked for again next time."""
        if request.template is not None and request.template.associates is not None:
            if outcome.status == NOT_FOUND:
                self._forget_sides(request)
            return
        if not outcome.ok:
            return
        template, body = request.template, outcome.body
        if template is None or not isinstance(body, dict):
            return
        if template.name == "create_or_update_person":
            users = body.get("users")
            self._remember(PERSON, users if isinstance(users, list) else [], PERSON_IDS)
        elif template.object_schema:
            objects = body.get("objects") if "objects" in body else [body.get("object")]
            self._remember(template.object_schema, objects if isinstance(objects, list) else [], ("externalId",))

    def _forget_sides(self, request: Request) -> None:
        association = t.cast("Association", t.cast("Template", request.template).associates)
        refs = {r for e in request.entries for r in (association.source(e.ids), association.target(e.ids)) if r}
        with self._lock:
            for ref in refs:
                self._known.pop(ref, None)
                self._unwritten.pop(ref, None)
                self._asked.discard(ref)
            self._stale.update(refs)

    def _remember(self, name: str, items: list, identifiers: tuple[str, ...]) -> None:
        found: dict[Ref, str] = {}
        for item in items:
            if not isinstance(item, dict) or item.get("id") in (None, ""):
                continue
            for field in identifiers:
                if item.get(field) not in (None, "") and field != "id":
                    key = person_key({field: item[field]}) if name == PERSON else f"{field}:{item[field]}"
                    found[(name, t.cast("str", key))] = str(item["id"])
        if found:
            with self._lock:
                self._known.update(found)
                self._unwritten.update(found)
                self._stale.difference_update(found)

    def known(self, refs: t.Iterable[Ref]) -> dict[Ref, str]:
        """The ids known for ``refs``, from this run or the ledger (an `id:...` identity is an id already)."""
        wanted = set(refs)
        found = {ref: ref[1][len("id:") :] for ref in wanted if ref[1].startswith("id:")}
        with self._lock:
            found.update({ref: self._known[ref] for ref in wanted if ref in self._known})
            ask = [ref for ref in wanted if ref not in found and ref not in self._asked]
            self._asked.update(ask)
        if ask and self.ledger is not None and self.account is not None:
            for name in {n for n, _ in ask}:
                rows = self.ledger.encharge_ids(self.account, name, [i for n, i in ask if n == name])
                with self._lock:
                    for identity, encharge_id in rows.items():
                        self._known[(name, identity)] = found[(name, identity)] = encharge_id
        return found

    def look_up(self, refs: t.Iterable[Ref]) -> dict[Ref, str]:
        """The ids of ``refs``, asking Encharge for those not known (people several per call); remembered."""
        wanted = set(refs)
        found = self.known(wanted)
        missing = sorted(ref for ref in wanted if ref not in found)
        if self.client is None or not missing:
            return found
        people = [ref for ref in missing if ref[0] == PERSON]
        learnt: list[tuple[str, list, tuple[str, ...]]] = []
        for start in range(0, len(people), PEOPLE_PER_LOOKUP):
            query = []
            for i, (_, identity) in enumerate(people[start : start + PEOPLE_PER_LOOKUP]):
                name, _, value = identity.partition(":")
                query.append((f"people[{i}][{name}]", value))
            body = self._get(f"{self.api_url}/people?{urllib.parse.urlencode(query)}")
            users = body.get("users") if isinstance(body, dict) else None
            learnt.append((PERSON, users if isinstance(users, list) else [], PERSON_IDS))
        for name, identity in missing:
            if name != PERSON:
                value = identity.partition(":")[2]
                path = f"/objects/{urllib.parse.quote(name, safe='')}/externalId/{urllib.parse.quote(value, safe='')}"
                body = self._get(self.api_url + path)
                learnt.append((name, [body.get("object")] if isinstance(body, dict) else [], ("externalId",)))
        for name, items, identifiers in learnt:
            self._remember(name, items, identifiers)
        with self._lock:
            found.update({ref: self._known[ref] for ref in missing if ref in self._known})
        return found

    def _get(self, url: str) -> t.Any:  # noqa: ANN401
        if self.client is None:
            return None
        request = Request.lookup(url, _ABSENT)
        outcome = self.client.send(request)
        if request.verdict(outcome) is Verdict.DELIVERED:
            return outcome.body
        if request.verdict(outcome) is not Verdict.ABSENT:
            logger.warning(
                "Could not ask Encharge for ids (GET %s): %s", urllib.parse.urlsplit(url).path, outcome.error
            )
        return None

    def write(self) -> None:
        """The ids learnt in this run, into the ledger (once, at the end: one transaction)."""
        with self._lock:
            unwritten, self._unwritten = self._unwritten, {}
            stale, self._stale = self._stale, set()
        if not self.writes or self.ledger is None or self.account is None:
            return
        for name in sorted({n for n, _ in stale}):
            self.ledger.forget_encharge_ids(self.account, name, [i for n, i in stale if n == name])
        for name in sorted({n for n, _ in unwritten}):
            self.ledger.remember_encharge_ids(
                self.account, name, {i: e for (n, i), e in unwritten.items() if n == name}
            )


class Associations:
    """Association records on their way: their URL made from both sides' Encharge ids, or waiting for the end of
    the run. ``schemas``: the account's custom object schemas (`GET /schemas`), for the association's id."""

    def __init__(self, ids: EnchargeIds, schemas: t.Callable[[], list[dict]] | None, *, dry_run: bool = False) -> None:
        self.ids, self.schemas, self.dry_run = ids, schemas, dry_run
        self.waiting: list[tuple[Route, Entry]] = []

    @staticmethod
    def sides(association: Association, entry: Entry) -> tuple[Ref, Ref]:
        source, target = association.source(entry.ids), association.target(entry.ids)
        if source is None or target is None:  # (refused before: the template's needs)
            msg = "an association record without both sides"
            raise ValueError(msg)
        return source, target

    def url(self, route: Route, entry: Entry) -> str | None:
        """The URL of ``entry``'s association when both sides' ids are known; else None, and it waits."""
        association = t.cast("Association", route.template.associates)
        source, target = self.sides(association, entry)
        found = self.ids.known((source, target))
        if source in found and target in found:
            return self._url(association, found[source], found[target])
        self.waiting.append((route, entry))
        return None

    def take_waiting(self) -> list[tuple[Route, Entry, str | None]]:
        """The records that waited, each with its URL now (None: a side Encharge does not have)."""
        waiting, self.waiting = self.waiting, []
        if not waiting:
            return []
        sides = {
            entry.seq: self.sides(t.cast("Association", route.template.associates), entry) for route, entry in waiting
        }
        found = self.ids.look_up(ref for pair in sides.values() for ref in pair)
        ready = []
        for route, entry in waiting:
            source, target = sides[entry.seq]
            association = t.cast("Association", route.template.associates)
            if self.dry_run:  # nothing is asked: a side not known shows as its identity
                found = {source: f"{{{source[1]}}}", target: f"{{{target[1]}}}", **found}
            there = source in found and target in found
            ready.append((route, entry, self._url(association, found[source], found[target]) if there else None))
        return ready

    def _url(self, association: Association, source_id: str, target_id: str) -> str:
        if association.method == "DELETE" and association.association_id is None:
            return association.url(source_id, target_id, self.association_id(association))
        return association.url(source_id, target_id)

    def association_id(self, association: Association) -> int | None:
        """The id of the one association between the two sides, as `GET /schemas` lists it (None: unknown)."""
        if association.association_id is not None:
            return association.association_id
        pair = {association.object_name, association.target_object_name}
        for schema in self.schemas() if self.schemas is not None else []:
            for definition in schema.get("associations") or ():
                if isinstance(definition, dict) and {definition.get("fromObject"), definition.get("toObject")} == pair:
                    return t.cast("int", definition.get("id"))
        return None

    def removal(self, template: Template) -> t.Callable[[dict, str], Removal]:
        """How `mirror` removes an association it made: `DELETE .../associations/{associationId}/{targetId}`,
        with both sides' ids looked up now (a side that is gone took its links with it: the 404 says so)."""
        association = t.cast("Association", template.associates)

        def removal(ids: dict, _action: str) -> Removal:
            source, target = association.source(ids), association.target(ids)
            refs = [ref for ref in (source, target) if ref is not None]
            found = self.ids.look_up(refs)
            number = self.association_id(association)
            source_id = found.get(source, "unknown") if source else "unknown"
            target_id = found.get(target, "unknown") if target else "unknown"
            return Removal("DELETE", association.url(source_id, target_id, number if number is not None else 0))

        return removal
