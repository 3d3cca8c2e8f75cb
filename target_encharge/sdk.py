"""Every private singer-sdk name this target touches, in one place.

The SDK offers no public hook for some of what a target must do (take STATE over, write it only once what came
before is delivered, read settings from the environment with their types, parse only a schema's date fields,
hear about unknown message types, reach the instance a command run builds, take a RECORD without the map loop
when its stream has no map). Each such private name is used here only, and turned into a public method of ours;
``tests/test_sdk_seams.py`` fails loudly when the SDK renames or moves any of them, so a renamed hook never goes
silently uncalled.
"""

from __future__ import annotations

import copy
import datetime
import typing as t

from singer_sdk import Target
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.helpers._typing import get_datelike_property_type
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import JSONSchemaValidator, _ConfigInput, _format_validation_error
from singer_sdk.sinks import RecordSink
from typing_extensions import override

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum

__all__ = [
    "PRIVATE_NAMES",
    "SeamReader",
    "SeamSink",
    "SeamTarget",
    "config_errors",
    "get_datelike_property_type",
    "parse_environment_config",
]

#: (SDK class, private attribute) pairs overridden or called here; the seam test checks each still exists.
PRIVATE_NAMES: tuple[tuple[type, str], ...] = (
    (Target, "_process_state_message"),
    (Target, "_write_state_message"),
    (Target, "_env_var_config"),
    (Target, "_env_var_prefix"),
    (Target, "_assert_line_requires"),
    (Target, "_process_batch_message"),
    (Target, "_process_activate_version_message"),
    (Target, "_process_record_message"),
    (Target, "_handle_termination"),
    (Target, "_handle_max_record_age"),
    (RecordSink, "_parse_timestamps_in_record"),
    (RecordSink, "_remove_sdc_metadata_from_record"),
    (RecordSink, "_add_sdc_metadata_to_record"),
    (RecordSink, "_get_context"),
    (RecordSink, "_validate_and_parse"),
    (RecordSink, "_singer_validate_message"),
    (RecordSink, "_after_process_record"),
    (MsgSpecReader, "_process_unknown_message"),
    (_ConfigInput, "config"),
    (_ConfigInput, "parse_env"),
)


# the SDK's parser for each date-like type (singer-sdk's `_parse_timestamps_in_record`: anything else is a date-time)
_PARSERS: dict[str, t.Callable[[str], t.Any]] = {
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "date-time": datetime.datetime.fromisoformat,
}


def config_errors(schema: dict, config: t.Mapping[str, t.Any]) -> list[str]:
    """What the SDK's check of a config against a settings schema finds, each worded as the SDK words it (the
    check a target's command makes before it runs; ``config`` is left as it was: the SDK's check fills defaults
    in)."""
    validator = JSONSchemaValidator(schema)
    return [_format_validation_error(error) for error in validator.iter_errors(copy.deepcopy(dict(config)))]


class SeamTarget(Target):
    """The SDK's private target hooks, each handed on to a public method of ours."""

    def on_state(self, state: dict) -> None:
        """A STATE message's value from the tap (ours decides when it goes out)."""
        raise NotImplementedError

    def on_batch(self, message: dict) -> None:
        """A BATCH message (its records are in the files its manifest names)."""
        raise NotImplementedError

    def on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT arrived (called from the signal handler: set flags, never do I/O or take locks)."""
        raise NotImplementedError

    def process_record_message(self, message: dict) -> None:
        """Handle one RECORD message as the SDK does (stream maps, validation, the sink's hooks)."""
        self._process_record_message(message)

    @classmethod
    def config_from_environment(cls, schema: dict, prefix: str) -> dict[str, t.Any]:
        """``--config ENV``: the settings read from ``<prefix><SETTING>`` variables."""
        return parse_environment_config(schema, prefix)

    @classmethod
    def run_command(cls, config: dict, *, parse_env_config: bool, file_input: t.IO[str] | None) -> None:
        """One run of the command: build the target from ``config`` and feed it the input."""
        target = cls(config=config, validate_config=True, parse_env_config=parse_env_config)
        target.listen(file_input)

    @override
    def _process_state_message(self, message_dict: dict) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        self.on_state(message_dict["value"])

    @override
    def _process_record_message(self, message_dict: dict) -> None:
        """The SDK's steps for a RECORD, in its order, the short way for a stream with no map of its own (the SDK's
        identity map, no flattening: the record as it came); a stream with maps goes the SDK's own way. The short
        way leaves out only the map loop and its checks (a stream with a map has had its SCHEMA and its sink;
        the reader has checked every RECORD's stream and record): a twentieth of what an unchanged rerun spends on
        a record (valgrind's count). ``tests/test_sdk_seams.py`` pins the SDK's source this follows."""
        maps = self.mapper.stream_maps.get(message_dict.get("stream", ""))
        if (
            not maps
            or len(maps) > 1
            or type(maps[0]) is not SameRecordTransform
            or maps[0].flattening_enabled
            or type(message_dict.get("record")) is not dict
        ):
            super()._process_record_message(message_dict)
            return
        sink = self.get_sink(maps[0].stream_alias)
        record = copy.copy(message_dict["record"])
        context = sink._get_context(record)
        if sink.include_sdc_metadata_properties:
            sink._add_sdc_metadata_to_record(record, message_dict, context)
        else:
            sink._remove_sdc_metadata_from_record(record)
        sink._validate_and_parse(record)
        record = sink.preprocess_record(record, context)
        sink._singer_validate_message(record)
        sink.tally_record_read()
        sink.process_record(record, context)
        sink.record_counter_metric.increment()
        sink._after_process_record(context)
        if sink.is_full:
            self.logger.info(
                "Target sink for '%s' is full. Current size is '%s'. Draining...", sink.stream_name, sink.current_size
            )
            self.drain_one(sink)
        self._handle_max_record_age()

    @override
    def _process_batch_message(self, message_dict: dict) -> None:
        self.on_batch(message_dict)

    @override
    def _process_activate_version_message(self, message_dict: dict) -> None:
        """An ACTIVATE_VERSION for a stream whose SCHEMA has not come yet says nothing to act on: told, ignored."""
        self._assert_line_requires(message_dict, requires={"stream", "version"})
        if message_dict["stream"] not in self.mapper.stream_maps:
            self.logger.warning(
                "ACTIVATE_VERSION for stream '%s' before its SCHEMA: nothing to do", message_dict["stream"]
            )
            return
        # the SDK's own loop, without its warning on every run that `_sdc_deleted_at` is added to the schema (this
        # target reads `_sdc_deleted_at` from the records as they come, and adds nothing)
        for stream_map in self.mapper.stream_maps[message_dict["stream"]]:
            sink = self.get_sink(stream_map.stream_alias)
            if not sink.process_activate_version_messages:
                self.logger.info(
                    "ACTIVATE_VERSION for stream '%s' ignored (process_activate_version_messages is off)",
                    stream_map.stream_alias,
                )
                continue
            sink.activate_version(message_dict["version"])

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        self.on_signal(signum)

    @override
    def _write_state_message(self, state: dict) -> None:
        """The SDK writes its latest STATE when it drains; ours goes out through on_state's gate, never here."""

    @classproperty
    def _env_var_config(cls) -> dict[str, t.Any]:  # noqa: N805
        cls.append_builtin_config(cls.config_jsonschema)
        return cls.config_from_environment(cls.config_jsonschema, cls._env_var_prefix)

    @classmethod
    @override
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: _ConfigInput | None = None,
        file_input: t.IO[str] | None = None,
    ) -> None:
        """The SDK's command run, with the target built in :meth:`run` (where a subclass can reach it)."""
        super(Target, cls).invoke(about=about, about_format=about_format)  # --about
        cls.print_version(print_fn=cls.logger.info)
        config = config or _ConfigInput()
        cls.run_command(config.config, parse_env_config=config.parse_env, file_input=file_input)


class SeamSink(RecordSink):
    """The SDK's date parsing, limited to the fields the schema says are dates (found once, not per record)."""

    _date_fields: dict[str, tuple[t.Callable[[str], t.Any], dict]] | None = None

    @override
    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: DatetimeErrorTreatmentEnum) -> None:
        if self._date_fields is None:
            self._date_fields = {
                k: (_PARSERS.get(kind, datetime.datetime.fromisoformat), {"properties": {k: v}})
                for k, v in schema.get("properties", {}).items()
                if (kind := get_datelike_property_type(v))
            }
        for field, (parse, sub_schema) in self._date_fields.items():
            value = record.get(field)
            if value is None:
                continue
            if type(value) is str:
                try:  # what the SDK does with a valid date, without its per-field walk of the schema
                    record[field] = parse(value)
                    continue
                except ValueError:
                    pass  # the SDK's own handling: its error treatment, then ours
            one = {field: value}
            try:
                super()._parse_timestamps_in_record(one, sub_schema, treatment)
            except (ValueError, TypeError, OverflowError) as exc:  # "", "0000-00-00", Feb 30, a number
                self.on_unparsable_date(record, field, exc)
                continue
            record[field] = one[field]

    def on_unparsable_date(self, record: dict, field: str, error: Exception) -> None:  # noqa: ARG002
        """``record[field]`` is not a date its schema's format allows (left as it came)."""
        raise error

    deleted_at: t.Any = None  # the `_sdc_deleted_at` of the record being processed, seen before the SDK strips it

    @override
    def _remove_sdc_metadata_from_record(self, record: dict) -> None:
        self.deleted_at = record.get("_sdc_deleted_at")
        super()._remove_sdc_metadata_from_record(record)


class SeamReader(MsgSpecReader):
    """The SDK's reader, telling us of message types it does not know."""

    def on_unknown_message(self, message: dict) -> None:
        """A message whose type the SDK does not know."""

    @override
    def _process_unknown_message(self, message_dict: dict) -> None:
        self.on_unknown_message(message_dict)
