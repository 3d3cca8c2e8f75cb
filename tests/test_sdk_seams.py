"""The private singer-sdk names target_encharge/sdk.py relies on: still there, and our overrides really called.

A renamed private hook would silently stop being called (STATE could then go out before delivery): each test
here fails loudly when the SDK moves or renames one of them. In-process, no network.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import io
import json
import logging
import signal

import pytest
from singer_sdk import Target
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.mapper import SameRecordTransform, StreamMap
from singer_sdk.plugin_base import _ConfigInput
from singer_sdk.sinks import RecordSink

from target_encharge.config import ENV_PREFIX
from target_encharge.sdk import PRIVATE_NAMES, SeamReader, SeamSink, SeamTarget
from target_encharge.target import TargetEncharge

DRY = {"api_key": "k" * 12, "dry_run": True, "preview_path": "-", "progress_interval": 0}


def _lines(*messages: dict) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def _run(config: dict, *messages: dict) -> tuple[TargetEncharge, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        target = TargetEncharge(config=config, validate_config=True)
        target.listen(_lines(*messages))
    return target, out.getvalue()


@pytest.mark.parametrize(("owner", "name"), PRIVATE_NAMES, ids=lambda x: getattr(x, "__name__", x))
def test_every_private_name_we_touch_still_exists(owner, name):
    fields = getattr(owner, "__dataclass_fields__", {})
    defined = any(name in vars(cls) for cls in owner.__mro__)  # not hasattr: that would run a classproperty
    assert name in fields or defined, f"singer-sdk no longer has {owner.__name__}.{name}"


def test_the_overridden_hooks_keep_their_signatures():
    expected = {
        (Target, "_process_state_message"): ["self", "message_dict"],
        (Target, "_write_state_message"): ["self", "state"],
        (RecordSink, "_parse_timestamps_in_record"): ["self", "record", "schema", "treatment"],
        (RecordSink, "_remove_sdc_metadata_from_record"): ["self", "record"],
        (MsgSpecReader, "_process_unknown_message"): ["self", "message_dict"],
        (Target, "_process_batch_message"): ["self", "message_dict"],
        (Target, "_process_activate_version_message"): ["self", "message_dict"],
        (Target, "_process_record_message"): ["self", "message_dict"],
        (Target, "_handle_termination"): ["self", "signum", "frame"],
    }
    for (owner, name), params in expected.items():
        assert list(inspect.signature(getattr(owner, name)).parameters) == params, f"{owner.__name__}.{name}"
    invoke = inspect.signature(Target.invoke).parameters
    assert {"about", "about_format", "config", "file_input"} <= set(invoke), "Target.invoke's parameters moved"
    assert set(_ConfigInput.__dataclass_fields__) >= {"config", "parse_env"}


# sha256 of the source of singer-sdk 0.54.9's Target.invoke, which SeamTarget.invoke copies (and skips)
TARGET_INVOKE_SHA256 = "09090ea685c4bda1ea3dcd177a8d8407e37f17f6d088f34dd01ac0214d4d4daa"


def test_the_copied_target_invoke_is_the_sdks_as_it_was_read():
    source = inspect.getsource(Target.invoke)
    assert hashlib.sha256(source.encode()).hexdigest() == TARGET_INVOKE_SHA256, (
        "singer-sdk's Target.invoke changed: SeamTarget.invoke (target_encharge/sdk.py) copies it and skips it. "
        "Re-read the new Target.invoke, carry what changed into SeamTarget.invoke, then pin the new hash here."
    )


# sha256 of the sources in singer-sdk 0.54.9 that SeamTarget._process_record_message follows: the SDK's steps for
# a RECORD (taken in their order) and its identity map with flattening off (left out: a record passes it unchanged)
RECORD_STEPS_SHA256 = {
    Target._process_record_message: "08aaf4096e2d39e7c3826848feebbaac40fb7b3e67fe863576cde90e4e425dfc",
    SameRecordTransform.transform: "db46d82cacfd5593cfc76f63521added9f53b974413f29ae0820f2cee718c7af",
    StreamMap.transform: "3d21910fbf85f850545ea4db19984353ec25d669532f92d31a6146fbfb51ccd2",
    StreamMap.flatten_record: "ccb0ee05e2c2b8600293fe4af8668305249024c9b0aa115d1105594ed4c474e0",
}


@pytest.mark.parametrize("function", RECORD_STEPS_SHA256, ids=lambda f: f.__qualname__)
def test_the_sdk_record_steps_the_short_way_follows_are_as_they_were_read(function):
    source = inspect.getsource(function)
    assert hashlib.sha256(source.encode()).hexdigest() == RECORD_STEPS_SHA256[function], (
        f"singer-sdk's {function.__qualname__} changed: SeamTarget._process_record_message (target_encharge/sdk.py) "
        "takes its steps, the short way. Re-read it, carry what changed into the short way, then pin the new hash."
    )


def test_a_record_goes_the_short_way_as_the_sdk_takes_it(monkeypatch, tmp_path, caplog):
    """A stream with no map of its own skips the SDK's map loop, and its sink is handed what the SDK's own loop
    hands it: `_sdc_` columns gone, dates parsed, a record that breaks its SCHEMA refused, every record counted."""
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": "string"},
            "logins": {"type": "integer"},
            "createdAt": {"type": "string", "format": "date-time"},
        },
    }
    messages = [
        {"type": "SCHEMA", "stream": "people", "schema": schema, "key_properties": ["email"]},
        {"type": "RECORD", "stream": "people", "record": {"email": "a@example.com", "_sdc_extracted_at": "x"}},
        {"type": "RECORD", "stream": "people", "record": {"email": "b@example.com", "logins": "many"}},
        {
            "type": "RECORD",
            "stream": "people",
            "record": {"email": "c@example.com", "logins": 2, "createdAt": "2024-01-02T03:04:05+00:00"},
        },
    ]
    maps = []
    monkeypatch.setattr(SameRecordTransform, "transform", lambda self, record: (maps.append(1), record)[1])

    def handed(name: str) -> tuple[list, list, list]:
        previews, dead = tmp_path / f"{name}-previews.jsonl", tmp_path / f"{name}-dead.jsonl"
        config = {**DRY, "preview_path": str(previews), "dead_letter_path": str(dead), "max_failures": -1}
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="singer_sdk.metrics"):
            _run(config, *messages)
        lines = [json.loads(line) for line in previews.read_text().splitlines()]
        reasons = [json.loads(line)["reason"] for line in dead.read_text().splitlines()]
        counted = [
            json.loads(r.message.split(": ", 1)[1])["value"] for r in caplog.records if "record_count" in r.message
        ]
        return [line["body"] for line in lines if "body" in line], reasons, counted

    short = handed("short")
    assert maps == [], "a stream without a map of its own went through the SDK's map loop"
    monkeypatch.setattr(SeamTarget, "_process_record_message", Target._process_record_message)
    assert handed("sdk") == short
    assert len(maps) == 3  # (the SDK's own loop ran)
    bodies, reasons, counted = short
    assert counted == [3]
    assert bodies == [
        [{"email": "a@example.com"}, {"email": "c@example.com", "logins": 2, "createdAt": "2024-01-02T03:04:05Z"}]
    ]
    assert len(reasons) == 1 and "logins" in reasons[0]


def test_the_environment_prefix_is_the_sdks():
    assert TargetEncharge._env_var_prefix == ENV_PREFIX, "the SDK reads --config ENV under another prefix now"


def test_our_seams_are_the_classes_in_use():
    assert issubclass(TargetEncharge, SeamTarget)
    assert issubclass(TargetEncharge.default_sink_class, SeamSink)
    assert issubclass(TargetEncharge.message_reader_class, SeamReader)


def test_a_state_message_reaches_our_hook_and_waits_for_the_records_before_it(monkeypatch):
    seen = []
    original = TargetEncharge.on_state
    monkeypatch.setattr(TargetEncharge, "on_state", lambda self, state: (seen.append(state), original(self, state)))
    _, out = _run(
        {**DRY, "dry_run": False, "api_url": "http://127.0.0.1:9/v1", "preview_path": None},
        {"type": "STATE", "value": {"bookmarks": {"a": 1}}},
    )
    assert seen == [{"bookmarks": {"a": 1}}]
    assert json.loads(out.splitlines()[-1]) == {"bookmarks": {"a": 1}}  # written by our gate, once
    assert out.count("bookmarks") == 1  # the SDK's own STATE writer (at its drain) wrote nothing


def test_dates_are_parsed_by_our_narrowed_hook(monkeypatch, tmp_path):
    calls = []
    original = SeamSink._parse_timestamps_in_record

    def spy(self, record, schema, treatment):
        calls.append(dict(record))
        original(self, record, schema, treatment)
        assert isinstance(record["createdAt"], datetime.datetime)

    monkeypatch.setattr(SeamSink, "_parse_timestamps_in_record", spy)
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string"}, "createdAt": {"type": "string", "format": "date-time"}},
    }
    previews = tmp_path / "previews.jsonl"  # previews never go to stdout
    _run(
        {**DRY, "preview_path": str(previews)},
        {"type": "SCHEMA", "stream": "people", "schema": schema, "key_properties": []},
        {
            "type": "RECORD",
            "stream": "people",
            "record": {"email": "a@example.com", "createdAt": "2024-01-02T03:04:05+00:00"},
        },
    )
    assert calls, "the SDK no longer calls _parse_timestamps_in_record"
    (preview,) = [json.loads(line) for line in previews.read_text().splitlines() if line.strip()]
    assert preview["body"] == [{"email": "a@example.com", "createdAt": "2024-01-02T03:04:05Z"}]  # ISO 8601 again


def test_unknown_message_types_reach_our_hook(caplog):
    with caplog.at_level(logging.WARNING, logger="target_encharge"):
        _run(DRY, {"type": "SOMETHING_NEW", "x": 1})
    assert "unknown message type 'SOMETHING_NEW'" in caplog.text


def test_settings_from_the_environment_go_through_our_typed_reader(monkeypatch):
    monkeypatch.setenv("TARGET_ENCHARGE_RETRY_BACKOFF", "0.25")
    monkeypatch.setenv("TARGET_ENCHARGE_REQUEST_HEADERS", "x-a:1")
    config = TargetEncharge._env_var_config  # the SDK's name for it; ours types the values
    assert config["retry_backoff"] == 0.25
    assert config["request_headers"] == "x-a:1"


def test_the_command_run_builds_the_target_in_our_run_command(monkeypatch, tmp_path):
    built = []
    original = TargetEncharge.run_command.__func__

    def spy(cls, config, *, parse_env_config, file_input):
        built.append(config)
        return original(cls, config, parse_env_config=parse_env_config, file_input=file_input)

    monkeypatch.setattr(TargetEncharge, "run_command", classmethod(spy))
    with contextlib.redirect_stdout(io.StringIO()):
        TargetEncharge.invoke(config=_ConfigInput(config=DRY), file_input=_lines())
    assert built == [DRY]


def test_a_batch_message_reaches_our_hook_and_its_records_go_as_records(tmp_path):
    rows = tmp_path / "people.jsonl"
    rows.write_text('{"email": "a@example.com"}\n{"email": "b@example.com"}\n')
    previews = tmp_path / "previews.jsonl"
    schema = {"type": "object", "properties": {"email": {"type": "string"}}}
    _run(
        {**DRY, "preview_path": str(previews), "batch_records": False},
        {"type": "SCHEMA", "stream": "people", "schema": schema, "key_properties": ["email"]},
        {
            "type": "BATCH",
            "stream": "people",
            "encoding": {"format": "jsonl", "compression": "none"},
            "manifest": [rows.as_uri()],
        },
    )
    bodies = [json.loads(line)["body"] for line in previews.read_text().splitlines()]
    assert bodies == [[{"email": "a@example.com"}], [{"email": "b@example.com"}]], "BATCH records vanished"


def test_a_termination_signal_reaches_our_hook(monkeypatch):
    seen = []
    monkeypatch.setattr(TargetEncharge, "on_signal", lambda self, signum: seen.append(signum))
    target = TargetEncharge(config=DRY, validate_config=True)
    try:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)  # what the SDK installed for SIGTERM
        assert seen == [signal.SIGTERM], "the SDK's signal handler no longer calls _handle_termination"
    finally:
        target.finish_quietly()
