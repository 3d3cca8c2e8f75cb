"""The sink: a stream's records checked and turned into entries for the outbox, through its template.

One sink class serves every template (the template is data, see templates.py). Sinks know nothing about
retries or threads: they hand records to the run's outbox, which batches them and hands requests to delivery.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import typing as t

import fastjsonschema
from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.sinks.core import BaseJSONSchemaValidator
from typing_extensions import override

from target_encharge.errors import InputError
from target_encharge.outbox import Route
from target_encharge.sdk import SeamSink
from target_encharge.settings import resolve

if t.TYPE_CHECKING:
    from singer_sdk import Target

    from target_encharge.fields import Consent, FieldContract
    from target_encharge.request import Entry
    from target_encharge.settings import StreamSettings
    from target_encharge.sync import StreamSync
    from target_encharge.templates import Template


class SinkRun(t.Protocol):
    """What a sink asks of the run it belongs to (run.py's ``Run``), and no more."""

    @property
    def retry_failed(self) -> bool: ...  # records that failed in earlier runs go first
    def template(self, settings: StreamSettings) -> Template: ...
    def open_stream(
        self, stream: str, template: Template, settings: StreamSettings, key_properties: t.Sequence[str]
    ) -> StreamSync | None: ...
    def admit(self, stream: str) -> bool: ...
    def entry(self, route: Route, record: dict, *, again: bool = False) -> Entry: ...
    def refuse(self, entry: Entry, problem: str) -> None: ...
    def send(self, route: Route, entry: Entry) -> None: ...
    def removed_at_source(self, route: Route, sync: StreamSync | None, record: dict, mode: str) -> None: ...
    def mirror(self, sync: StreamSync, version: t.Any) -> None: ...  # noqa: ANN401
    def watch(self, route: Route, settings: StreamSettings) -> None: ...
    def field_contract(
        self, stream: str, template: Template, settings: StreamSettings, schema: dict
    ) -> FieldContract | None: ...
    def consent(self) -> Consent: ...


class HasRun(t.Protocol):
    """What a sink needs of its target: the run it belongs to."""

    @property
    def run(self) -> SinkRun: ...


class RecordValidator(BaseJSONSchemaValidator):
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
        except re.error as exc:  # a `pattern` that is not a regular expression
            msg = f"its SCHEMA has a `pattern` that is not a valid regular expression ({exc})"
            raise InputError(msg) from None

    @override
    def validate(self, record: dict) -> None:
        if self._check is None:
            return
        try:
            self._check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            self._repair(record, exc)

    def _repair(self, record: dict, exc: fastjsonschema.JsonSchemaValueException) -> None:
        """Integral `5.0` values made integers where the schema wants one, then checked again; else refused."""
        check = self._check
        if check is None:
            return
        for _ in range(MAX_INTEGER_REPAIRS):
            if not _integral_decimal_made_int(record, exc):
                self.report(f"does not match its stream's SCHEMA: {exc.message}")
                return
            try:
                check(record)
            except fastjsonschema.JsonSchemaValueException as again:
                exc = again
            else:
                return
        self.report(f"does not match its stream's SCHEMA: {exc.message}")


MAX_INTEGER_REPAIRS = 100  # `5.0` values made integers in one record before it is refused


def _integral_decimal_made_int(record: dict, exc: fastjsonschema.JsonSchemaValueException) -> bool:
    """JSON Schema counts `5.0` as an integer; the reader reads it as Decimal, which fastjsonschema does not.
    Make the value at the failing place an int when that is all that was wrong."""
    value, definition = exc.value, exc.definition or {}
    types = definition.get("type") if isinstance(definition, dict) else None
    types = [types] if isinstance(types, str) else types or []
    if (
        exc.rule != "type"
        or "integer" not in types
        or not isinstance(value, decimal.Decimal)
        or not value.is_finite()
        or value != value.to_integral_value()
    ):
        return False
    path = [int(step) if step.isdigit() else step for step in (exc.path or [])[1:]]  # [0] is "data"
    if not path:
        return False
    holder: t.Any = record
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = int(value)
    return True


class EnchargeSink(SeamSink):
    """Any stream, sent through the Encharge template its settings route it to."""

    def __init__(self, target: Target, stream_name: str, schema: dict, key_properties: t.Any) -> None:  # noqa: ANN401
        self.run: SinkRun = t.cast("HasRun", target).run
        self.reader = target.message_reader  # its line number names a bad record's line
        self.settings = resolve(target.config, stream_name)
        self.template: Template = self.run.template(self.settings)
        self.problem: str | None = None  # set by the checks the SDK runs before process_record
        self._add_record_metadata = bool(target.config.get("add_record_metadata", False))
        super().__init__(target, stream_name, schema, key_properties)
        self._full_at = self.max_size
        self._keys = frozenset(self.key_properties or ())  # every record must carry them (preprocess_record)
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
        own = stream_name in (target.config.get("streams") or {})
        self.sync: StreamSync | None = None  # set up before the first record (it needs the account)
        self.fields: FieldContract | None = None  # the account's fields, read before the first record
        self.mirrored = False  # mirror: every record's identity is stamped with its snapshot (StreamSync.saw)
        self.consent: Consent | None = None  # person upserts: `unsubscribed: false` left out
        self.logger.info(
            "Stream '%s' goes to %s (mode: %s; %s)%s",
            stream_name,
            self.template.name,
            self.settings.sync_mode,
            f"batches of up to {self.route.batch_size}" if batched else "one record per call",
            "" if own else " (default: not listed in `streams`)",
        )

    @property
    @override
    def is_full(self) -> bool:
        """As the SDK's, without its three properties per record (its size limit does not change in a run)."""
        return self.current_size >= self._full_at

    @property
    @override
    def include_sdc_metadata_properties(self) -> bool:
        """The SDK's `add_record_metadata` setting, read once (the SDK asks for every record)."""
        return self._add_record_metadata

    @override
    def setup(self) -> None:
        """Before any record: the stream's key is there and accepted, its custom object schema exists (not in a
        dry run, which sends nothing)."""
        super().setup()
        self.sync = self.run.open_stream(self.stream_name, self.template, self.settings, self.key_properties or ())
        self.fields = self.run.field_contract(self.stream_name, self.template, self.settings, self.schema)
        if self.template.field_owner == "person" and not self.settings.allow_resubscribe:
            self.consent = self.run.consent()
        if self.sync is not None:
            self.route = dataclasses.replace(self.route, sync=self.sync)
            if self.settings.sync_mode == "mirror":
                self.mirrored = True
                self.run.watch(self.route, self.settings)
            if self.run.retry_failed:
                self._send_again(self.sync)

    def _send_again(self, sync: StreamSync) -> None:
        """Records of this stream that failed in earlier runs for a reason that can pass go first."""
        waiting = sync.waiting()
        if not waiting:
            return
        self.logger.info(
            "Stream '%s': sending again %d record(s) that failed in earlier runs (oldest: %s)",
            self.stream_name,
            len(waiting),
            waiting[0].reason,
        )
        for failure in waiting:
            self.run.send(self.route, self.run.entry(self.route, dict(failure.payload), again=True))

    @override
    def activate_version(self, new_version: int) -> None:
        """The tap's ACTIVATE_VERSION: a `mirror` snapshot starts, or (after its records) is complete."""
        if self.sync is not None and self.settings.sync_mode == "mirror":
            self.run.mirror(self.sync, new_version)

    @override
    def get_validator(self) -> BaseJSONSchemaValidator | None:
        if not self.validate_schema:
            return None
        try:
            return RecordValidator(self.schema, self._report)
        except InputError as exc:
            msg = f"input line {self._line}: stream '{self.stream_name}': {exc}; nothing after it was read"
            raise InputError(msg) from None

    @override
    def on_unparsable_date(self, record: dict, field: str, error: Exception) -> None:
        """A date the SDK cannot parse is refused naming the field, or kept as the text it is where the schema
        also allows plain text (``anyOf`` with a string without a date format)."""
        value = record[field]
        if isinstance(value, str) and _allows_plain_text(self.schema["properties"][field]):
            return
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        self._report(f"field '{field}': {shown} is not a valid {_date_format(self.schema['properties'][field])}")

    @property
    def _line(self) -> int | str:
        return getattr(self.reader, "line_number", "?")

    def _report(self, problem: str) -> None:
        self.problem = self.problem or problem

    @override
    def preprocess_record(self, record: dict, context: dict) -> dict:
        """A record without its key properties stops the run, as the SDK requires, saying which and where."""
        if record.keys() >= self._keys:
            return record
        missing = [key for key in self.key_properties or () if key not in record]
        keys = ", ".join(map(repr, missing))
        msg = (
            f"input line {self._line}: a record of stream '{self.stream_name}' has no {keys} "
            f"(its key propert{'ies' if len(missing) > 1 else 'y'}); nothing after it was read"
        )
        raise MissingKeyPropertiesError(msg)

    @override
    def process_record(self, record: dict, context: dict) -> None:
        run = self.run
        if not run.admit(self.stream_name):
            self.problem = None
            return  # a test send: only the first record of each stream
        deleted, self.deleted_at = self.deleted_at or record.get("_sdc_deleted_at"), None
        if self.exclude:
            record = {k: v for k, v in record.items() if k not in self.exclude}
        if deleted:
            self.problem = None
            run.removed_at_source(self.route, self.sync, record, self.settings.sync_mode)
            return
        if self.consent is not None and "unsubscribed" in record:
            record = self.consent.kept(record)
        if self.fields is not None:
            record, misfit = self.fields.apply(record)
            self.problem = self.problem or misfit
        if self.mirrored:
            self.sync.saw(record, getattr(self.reader, "version", None))  # type: ignore[union-attr]
        entry = run.entry(self.route, record)
        problem, self.problem = self.problem, None
        problem = problem or self.template.needs(record, entry.ids)
        if problem:
            run.refuse(entry, problem)
            return
        run.send(self.route, entry)


def _allows_plain_text(spec: dict) -> bool:
    """Whether a property's schema also takes any text (a string branch with no date format)."""
    branches = spec.get("anyOf") or spec.get("oneOf") or []
    return any(
        isinstance(b, dict)
        and "string" in (b.get("type") or ())
        and b.get("format") not in ("date-time", "date", "time")
        for b in branches
    )


def _date_format(spec: dict) -> str:
    formats = [b.get("format") for b in [spec, *(spec.get("anyOf") or ())] if isinstance(b, dict)]
    return next((f for f in formats if f in ("date-time", "date", "time")), "date")
