"""The sink: a stream's records checked and turned into entries for the outbox, through its template.

One sink class serves every template (the template is data, see templates.py). Sinks know nothing about
retries or threads: they hand records to the run's outbox, which batches them and hands requests to delivery.
"""

from __future__ import annotations

import typing as t

import fastjsonschema
from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.sinks.core import BaseJSONSchemaValidator
from typing_extensions import override

from target_encharge.outbox import Route
from target_encharge.sdk import SeamSink
from target_encharge.settings import resolve
from target_encharge.templates import Template, template_for

if t.TYPE_CHECKING:
    from singer_sdk import Target

    from target_encharge.run import Run


class HasRun(t.Protocol):
    """What a sink needs of its target: the run it belongs to."""

    run: Run


class RecordCheck(BaseJSONSchemaValidator):
    """A compiled JSON-schema check that never stops the run: a record that does not match its SCHEMA is
    dead-lettered with the reason by the sink (the SDK's own validator would end the run, or only log)."""

    def __init__(self, schema: dict, report: t.Callable[[str], None]) -> None:
        super().__init__(schema)
        self.report = report
        self._check: t.Callable[[dict], t.Any] | None
        try:
            self._check = fastjsonschema.compile(schema, formats={"date-time": ".*", "date": ".*", "time": ".*"})
        except fastjsonschema.JsonSchemaDefinitionException:
            self._check = None

    @override
    def validate(self, record: dict) -> None:
        if self._check is None:
            return
        try:
            self._check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            self.report(f"does not match its stream's SCHEMA: {exc.message}")


class EnchargeSink(SeamSink):
    """Any stream, sent through the Encharge template its settings route it to."""

    def __init__(self, target: Target, stream_name: str, schema: dict, key_properties: t.Any) -> None:  # noqa: ANN401
        self.run: Run = t.cast("HasRun", target).run
        self.reader = target.message_reader  # its line number names a bad record's line
        self.settings = resolve(target.config, stream_name)
        self.template: Template = template_for(self.settings, self.run.settings.api_url,
                                               self.run.settings.ingest_url)
        self.problem: str | None = None  # set by the checks the SDK runs before process_record
        super().__init__(target, stream_name, schema, key_properties)
        batched = self.settings.batch_records and self.template.batchable
        self.route = Route(
            stream=stream_name,
            template=self.template,
            headers=self.settings.request_headers,
            batched=batched,
            batch_size=self.settings.batch_size if batched else 1,
            group_by=self.settings.group_by if self.settings.grouping_algorithm == "by_field" else None,
        )
        self.exclude = self.settings.exclude_attributes

    @override
    def setup(self) -> None:
        """Before any record: the stream's key is there and accepted, its custom object schema exists (not in a
        dry run, which sends nothing)."""
        super().setup()
        if not self.run.settings.dry_run:
            self.run.checks.before_sending(self.stream_name, self.template, self.settings)
        self.run.progress.start()

    @override
    def get_validator(self) -> BaseJSONSchemaValidator | None:
        return RecordCheck(self.schema, self._report) if self.validate_schema else None

    def _report(self, problem: str) -> None:
        self.problem = self.problem or problem

    @override
    def preprocess_record(self, record: dict, context: dict) -> dict:
        """A record without its key properties stops the run, as the SDK requires, saying which and where."""
        missing = [key for key in self.key_properties or () if key not in record]
        if missing:
            line = getattr(self.reader, "line_number", "?")
            keys = ", ".join(map(repr, missing))
            msg = (f"input line {line}: a record of stream '{self.stream_name}' has no {keys} "
                   f"(its key propert{'ies' if len(missing) > 1 else 'y'}); nothing after it was read")
            raise MissingKeyPropertiesError(msg)
        return record

    @override
    def process_record(self, record: dict, context: dict) -> None:
        run = self.run
        run.delivery.raise_if_fatal()
        results = run.results
        if not results.admit(self.stream_name):
            self.problem = None
            return  # a test send: only the first record of each stream
        if self.exclude:
            record = {k: v for k, v in record.items() if k not in self.exclude}
        entry = results.entry(self.stream_name, record, self.template.identifiers(record))
        problem, self.problem = self.problem, None
        problem = problem or self.template.needs(record)
        if problem:
            results.fail(entry, f"refused before sending: {problem}")
            results.check_failures()
            return
        run.outbox.add(self.route, entry, self.template.url(record))
