"""The outbox: open batches, the same-person/object holding map, and when batches go.

A batch goes when it is full, when a STATE comes and it has been open a while (``STATE_FLUSH_AGE``), when a
record for a person waiting in it arrives for another batch (input order), when a sequential stream's record
goes to another URL, and at the end of input. The outbox owns every open batch, whichever sink filled it: it
can send them all without the SDK calling any sink's ``clean_up``.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

from target_encharge.request import Entry, Request
from target_encharge.templates import Template

if t.TYPE_CHECKING:
    from target_encharge.sync import StreamSync

STATE_FLUSH_AGE = 1.0  # seconds: at a STATE, open batches older than this go out so the STATE can follow


@dataclasses.dataclass(frozen=True, eq=False)
class Route:
    """How one sink's records become requests: its template, headers, and how they are batched."""

    stream: str
    template: Template
    headers: t.Mapping[str, str]
    batched: bool = False  # several records per request (else one request per record, sent at once)
    batch_size: int = 1  # most records per request
    group_by: str | None = None  # `by_field`: a batch holds one value of this field
    sync: StreamSync | None = None  # what the sync ledger says of its records before they go

    def request(self, entries: t.Sequence[Entry], url: str, keys: t.Iterable[str]) -> Request:
        return Request.for_entries(self.template, self.headers, entries, url, keys)


class Batch:
    """Records waiting to share one request: same route, same URL, same group."""

    __slots__ = ("entries", "group", "keys", "opened", "route", "url")

    def __init__(self, route: Route, url: str, group: t.Any) -> None:  # noqa: ANN401
        self.route, self.url, self.group = route, url, group
        self.entries: list[Entry] = []
        self.keys: set[str] = set()
        self.opened = time.monotonic()


class Outbox:
    """Every open batch of the run, and which person or object each one holds; hands finished requests to
    ``submit``. Used from the reading thread only."""

    def __init__(
        self, submit: t.Callable[[Request], None], unsent: t.Callable[[str, t.Sequence[Entry], str], None] | None = None
    ) -> None:
        self.submit = submit
        self.unsent = unsent  # (stream, entries, why): records the sync ledger says not to send
        self._open: dict[Route, dict[tuple[str, t.Any], Batch]] = {}
        self._holding: dict[str, Batch] = {}  # ordering key -> the open batch holding it

    def add(self, route: Route, entry: Entry, url: str) -> None:
        """Send ``entry`` to ``url``: at once, or into its route's open batch for that URL and group."""
        keys = route.template.ordering_keys(entry.ids, url)
        group = entry.record.get(route.group_by) if route.group_by else None
        batches = self._open.setdefault(route, {})
        self._flush_holding(keys, batches.get((url, group)))
        if not route.batched:
            self._send(route, [entry], url, keys)
            return
        if not route.group_by and batches and (url, None) not in batches:
            self.flush_route(route)  # sequential: a record for another URL closes the open batch (arrival order)
        batch = batches.get((url, group))
        if batch is None:
            batch = batches[(url, group)] = Batch(route, url, group)
        batch.entries.append(entry)
        batch.keys.update(keys)
        for key in keys:
            self._holding[key] = batch
        if len(batch.entries) >= route.batch_size:
            self.flush(batch)

    def flush(self, batch: Batch) -> None:
        """Send a batch now."""
        batches = self._open.get(batch.route, {})
        if batches.get((batch.url, batch.group)) is batch:
            del batches[(batch.url, batch.group)]
        for key in batch.keys:
            if self._holding.get(key) is batch:
                del self._holding[key]
        if batch.entries:
            self._send(batch.route, batch.entries, batch.url, batch.keys)

    def flush_route(self, route: Route) -> None:
        """Send one route's open batches."""
        for batch in list(self._open.get(route, {}).values()):
            self.flush(batch)

    def flush_all(self, older_than: float | None = None) -> None:
        """Send every open batch (only those opened ``older_than`` seconds ago or more, if given)."""
        now = time.monotonic()
        for batches in list(self._open.values()):
            for batch in list(batches.values()):
                if older_than is None or now - batch.opened >= older_than:
                    self.flush(batch)

    def _send(self, route: Route, entries: t.Sequence[Entry], url: str, keys: t.Iterable[str]) -> None:
        """Hand the request for ``entries`` to delivery, less what the sync ledger says not to send; custom
        objects that exist go one per call as updates."""
        if route.sync is not None:
            sifted = route.sync.sift(entries)
            if self.unsent is not None:
                for why, unsent in (("unchanged", sifted.unchanged), ("skipped", sifted.skipped)):
                    if unsent:
                        self.unsent(route.stream, unsent, why)
            for entry in sifted.update:
                self.submit(
                    Request.upsert(route.template, route.headers, entry, route.template.ordering_keys(entry.ids, url))
                )
            entries = sifted.send
        if entries:
            self.submit(route.request(entries, url, keys))

    def flush_holding_of(self, keys: t.Iterable[str]) -> None:
        """Send the open batches holding any of ``keys`` (a request for that person goes next, in order)."""
        self._flush_holding(keys, None)

    def _flush_holding(self, keys: t.Iterable[str], joining: Batch | None) -> None:
        """A record for a person waiting in another open batch (another stream, URL or group) sends that batch
        first (input order); ``joining`` is the batch the record itself goes into, if one is open."""
        for key in keys:
            batch = self._holding.get(key)
            if batch is not None and batch is not joining:
                self.flush(batch)
