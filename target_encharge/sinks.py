"""The sink: turns a stream's records into calls through its template, batching where the API takes arrays.

One sink class serves every template (the template is data, see templates.py). Sinks know nothing about
retries or threads: they hand finished calls to the target's delivery.
"""

from __future__ import annotations

import time
import typing as t

import fastjsonschema
from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.sinks import RecordSink
from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_encharge.client import Call, Entry
from target_encharge.settings import resolve
from target_encharge.templates import Template, ordering_keys, template_for

if t.TYPE_CHECKING:
    from target_encharge.target import TargetEncharge

STATE_FLUSH_AGE = 1.0  # seconds: at a STATE, open batches older than this go out so the STATE can follow


class RecordCheck(BaseJSONSchemaValidator):
    """A compiled JSON-schema check that never stops the run: a record that does not match its SCHEMA is
    dead-lettered with the reason by the sink (the SDK's own validator would end the run, or only log)."""

    def __init__(self, schema: dict, report: t.Callable[[str], None]) -> None:
        super().__init__(schema)
        self.report = report
        try:
            self._check = fastjsonschema.compile(schema, formats={"date-time": ".*", "date": ".*", "time": ".*"})
        except fastjsonschema.JsonSchemaDefinitionException:
            self._check = None

    def validate(self, record: dict) -> None:
        if self._check is None:
            return
        try:
            self._check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            self.report(f"does not match its stream's SCHEMA: {exc.message}")


class Batch:
    """Records waiting to share one call: same URL, same group."""

    __slots__ = ("entries", "group", "keys", "opened", "sink", "url")

    def __init__(self, sink: EnchargeSink, url: str, group: t.Any) -> None:  # noqa: ANN401
        self.sink, self.url, self.group = sink, url, group
        self.entries: list[Entry] = []
        self.keys: set[str] = set()
        self.opened = time.monotonic()


class EnchargeSink(RecordSink):
    """Any stream, sent through the Encharge template its settings route it to."""

    target: TargetEncharge

    def __init__(self, target: TargetEncharge, stream_name: str, schema: dict, key_properties: t.Any) -> None:  # noqa: ANN401
        self.settings = resolve(target.config, stream_name)
        self.template: Template = template_for(self.settings, target.api_url, target.ingest_url)
        super().__init__(target, stream_name, schema, key_properties)
        self.target = target
        self.batched = self.settings.batch_records and self.template.batchable
        self.size = self.settings.batch_size if self.batched else 1
        self.group_by = self.settings.group_by if self.settings.grouping_algorithm == "by_field" else None
        self.exclude = self.settings.exclude_attributes
        self.headers = self.settings.request_headers
        self.open: dict[tuple[str, t.Any], Batch] = {}
        self._date_fields: dict[str, dict] | None = None

    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: t.Any) -> None:  # noqa: ANN401
        """The SDK's date parsing, limited to the fields the schema says are dates (found once, not per record)."""
        if self._date_fields is None:
            self._date_fields = {k: {"properties": {k: v}} for k, v in schema.get("properties", {}).items()
                                 if get_datelike_property_type(v)}
        for field, sub_schema in self._date_fields.items():
            if record.get(field) is not None:
                one = {field: record[field]}
                super()._parse_timestamps_in_record(one, sub_schema, treatment)
                record[field] = one[field]

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        self.problem: str | None = None  # set by the checks the SDK runs before process_record
        return RecordCheck(self.schema, self._report) if self.validate_schema else None

    def _report(self, problem: str) -> None:
        self.problem = self.problem or problem

    def preprocess_record(self, record: dict, context: dict) -> dict:  # noqa: ARG002
        """A record without its key properties stops the run, as the SDK requires, saying which and where."""
        missing = [key for key in self.key_properties or () if key not in record]
        if missing:
            line = getattr(self.target.message_reader, "line_number", "?")
            keys = ", ".join(map(repr, missing))
            msg = (f"input line {line}: a record of stream '{self.stream_name}' has no {keys} "
                   f"(its key propert{'ies' if len(missing) > 1 else 'y'}); nothing after it was read")
            raise MissingKeyPropertiesError(msg)
        return record

    def process_record(self, record: dict, context: dict) -> None:  # noqa: ARG002
        target = self.target
        target.delivery.raise_if_fatal()
        if not target.ledger.admit(self.stream_name):
            self.problem = None
            return  # a test send: only the first record of each stream
        if self.exclude:
            record = {k: v for k, v in record.items() if k not in self.exclude}
        entry = Entry(target.ledger.number(self.stream_name), self.stream_name, record,
                      self.template.identifiers(record))
        problem, self.problem = self.problem, None
        problem = problem or self.template.needs(record)
        if problem:
            target.ledger.fail(entry, f"refused before sending: {problem}")
            target.ledger.check_failures()
            return
        url = self.template.url(record)
        keys = ordering_keys(self.template, entry.ids, url)
        group = record.get(self.group_by) if self.group_by else None
        target.flush_holding(keys, self.open.get((url, group)))
        if not self.batched:
            target.delivery.submit(self.call([entry], url, keys))
            return
        if not self.group_by and self.open and (url, None) not in self.open:
            self.flush_all()  # sequential: a record for another URL closes the open batch, keeping arrival order
        batch = self.open.get((url, group))
        if batch is None:
            batch = self.open[(url, group)] = Batch(self, url, group)
        batch.entries.append(entry)
        batch.keys.update(keys)
        target.hold(keys, batch)
        if len(batch.entries) >= self.size:
            self.flush(batch)

    def call(self, entries: list[Entry], url: str, keys: tuple[str, ...] | set[str]) -> Call:
        """The request for these records (the same shape again for fewer of them when a batch is split)."""
        records = [e.record for e in entries]
        return Call(
            stream=self.stream_name,
            endpoint=self.template.name,
            method=self.template.method,
            url=url,
            content_type=self.template.content_type,
            headers=self.headers,
            body=self.template.body(records),
            entries=entries,
            keys=tuple(keys),
            rebuild=(lambda part: self.call(part, url, keys)) if len(entries) > 1 else None,
        )

    def flush(self, batch: Batch) -> None:
        """Send a batch now."""
        if self.open.get((batch.url, batch.group)) is batch:
            del self.open[(batch.url, batch.group)]
        self.target.release(batch)
        if batch.entries:
            self.target.delivery.submit(self.call(batch.entries, batch.url, batch.keys))

    def flush_all(self, older_than: float | None = None) -> None:
        """Send the open batches (only those opened more than ``older_than`` seconds ago, if given)."""
        now = time.monotonic()
        for batch in list(self.open.values()):
            if older_than is None or now - batch.opened >= older_than:
                self.flush(batch)

    def clean_up(self) -> None:
        self.flush_all()
        super().clean_up()
