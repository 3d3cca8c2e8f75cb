"""A request and what came of it: the record :class:`Entry`, the immutable :class:`Request`, its
:class:`Outcome`, and :func:`verdict`, the one place that says what an outcome means."""

from __future__ import annotations

import dataclasses
import typing as t

from target_encharge.verdicts import NO_ANSWERS, Verdict

if t.TYPE_CHECKING:
    from target_encharge.templates import Template


@dataclasses.dataclass(slots=True)  # not frozen: one is made for every record, and frozen ones cost twice
class Entry:
    """One record on its way: its place in the input, what is sent, and what identifies it (never changed once
    made)."""

    seq: int
    stream: str
    record: dict
    ids: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """One HTTP request carrying one or more records (compared by identity: two equal bodies are two calls)."""

    stream: str
    endpoint: str
    method: str
    url: str
    content_type: str
    headers: t.Mapping[str, str]
    body: bytes | None
    entries: tuple[Entry, ...] = ()
    keys: tuple[str, ...] = ()  # ordering keys: requests sharing one go out in input order
    template: Template | None = None  # what the body was built with; a batch is split through it
    removal: bool = False  # mirror removing what left the source (a 404 means it is already gone)
    note: str | None = None  # why it is sent, shown in previews (a removal's reason)
    # what a refusal's status means for it (its template's, or a removal's or lookup's own)
    answers: t.Mapping[int, Verdict] = dataclasses.field(default_factory=lambda: NO_ANSWERS)

    def verdict(self, outcome: Outcome) -> Verdict:
        """What ``outcome`` means for this request's records."""
        return verdict(outcome, self.answers)

    @classmethod
    def for_entries(
        cls,
        template: Template,
        headers: t.Mapping[str, str],
        entries: t.Sequence[Entry],
        url: str,
        keys: t.Iterable[str],
    ) -> Request:
        """The request ``template`` makes of these records."""
        return cls(
            stream=entries[0].stream,
            endpoint=template.name,
            method=template.method,
            url=url,
            content_type=template.content_type,
            headers=headers,
            body=template.body([e.record for e in entries]),
            entries=tuple(entries),
            keys=tuple(keys),
            template=template,
            answers=template.answers,
        )

    @classmethod
    def upsert(cls, template: Template, headers: t.Mapping[str, str], entry: Entry, keys: t.Iterable[str]) -> Request:
        """The request that updates ``entry``'s record where it exists (a custom object: PUT, one per call)."""
        upsert = template.upsert or template
        return cls.for_entries(upsert, headers, [entry], upsert.url(entry.record), keys)

    def as_upserts(self) -> tuple[Request, ...]:
        """Each record of this create, as an update (one per call)."""
        if self.template is None:
            return ()
        return tuple(Request.upsert(self.template, self.headers, entry, self.keys) for entry in self.entries)

    @classmethod
    def lookup(cls, url: str, answers: t.Mapping[int, Verdict] = NO_ANSWERS) -> Request:
        """A GET that carries no record (a start-up check, a lookup)."""
        return cls(
            stream="",
            endpoint="lookup",
            method="GET",
            url=url,
            content_type="",
            headers={},
            body=None,
            answers=answers,
        )

    @property
    def splittable(self) -> bool:
        return len(self.entries) > 1 and self.template is not None

    def halves(self) -> tuple[Request, Request]:
        """The same request for each half of its records (to find the records at fault in a refused batch)."""
        if self.template is None:
            msg = "only a request built from a template can be split"
            raise ValueError(msg)
        middle = len(self.entries) // 2
        return (
            Request.for_entries(self.template, self.headers, self.entries[:middle], self.url, self.keys),
            Request.for_entries(self.template, self.headers, self.entries[middle:], self.url, self.keys),
        )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What came of a request after its last attempt (``attempts`` 0: not sent, a dry run)."""

    status: int | None
    body: t.Any
    error: str | None
    attempts: int
    seconds: float
    headers: t.Mapping[str, str] = dataclasses.field(default_factory=dict)  # of the last answer (test send)
    credentialed: bool = True  # the URL was given one of our keys (a 401/403 then means the key is refused)
    failure: str | None = None  # no answer: "timeout", "connection" (refused or dropped), "request" (not made)

    @classmethod
    def not_sent(cls) -> Outcome:
        """A dry run's outcome: nothing was sent."""
        return cls(None, None, None, 0, 0.0)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


TRANSIENT_FAILURES = frozenset(("timeout", "connection"))
RETRIED_STATUSES = frozenset((408, 429))  # request timeout, too many requests: like a 5xx, worth another try


def verdict(outcome: Outcome, answers: t.Mapping[int, Verdict] = NO_ANSWERS) -> Verdict:
    """The one reading of an outcome; ``answers``: what a refusal's status means for the request (its template's,
    or a lookup's: a 404 to a tag means its person is not there yet, to a removal that it is already gone)."""
    status = outcome.status
    if outcome.attempts == 0:
        return Verdict.DRY_RUN
    if outcome.ok:
        return Verdict.DELIVERED
    if status is None:
        return Verdict.RETRY if outcome.failure in TRANSIENT_FAILURES else Verdict.FAILED
    if status in (401, 403) and outcome.credentialed:  # from another host, a refusal is the record's, not our key's
        return Verdict.AUTH_FAILURE
    if status in RETRIED_STATUSES or status >= 500:
        return Verdict.RETRY
    return answers.get(status, Verdict.REFUSED)
