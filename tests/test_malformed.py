"""A corpus of malformed input: each gets a clear one-line reason and the right exit code, nothing half-sent.

The fatal cases all sit at line 5, after two people and a STATE, with more input after them. What was read
before the bad line is delivered (even from an open batch) and its STATE emitted; nothing after it is sent.
"""

from __future__ import annotations

import pytest
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state

BEFORE = [*people(2), state({"read": 2})]  # lines 1-4: SCHEMA, p0, p1, STATE
AFTER = [record("people", {"email": "late@example.com", "firstName": "Late"}), state({"read": "late"})]

FATAL = {
    "truncated JSON": (
        '{"type": "RECORD", "stream": "people", "record": {"email": "trunc@exa\n',
        "input line 5 is not valid JSON",
    ),
    "non-UTF-8 bytes": (
        b'{"type": "RECORD", "stream": "people", "record": {"email": "\xff\xfe@example.com"}}\n',
        "input line 5 is not UTF-8",
    ),
    "binary garbage": (b"\x00\x9c\xff\x01garbage\n", "input line 5"),
    "JSON that is not an object": ("[1, 2, 3]\n", "input line 5 is not a Singer message"),
    "an object with no type": (
        '{"stream": "people", "record": {"email": "x@example.com"}}\n',
        "input line 5 is not a Singer message",
    ),
    "a record before its SCHEMA": (record("orders", {"email": "x@example.com"}), "'orders'"),
    "a record missing its key property": (record("people", {"firstName": "Nobody"}), "email"),
    "a STATE with no value": ('{"type": "STATE"}\n', "value"),
    "a RECORD with no record": ('{"type": "RECORD", "stream": "people"}\n', "record"),
    "a RECORD whose record is a list": (
        '{"type": "RECORD", "stream": "people", "record": ["x@example.com"]}\n',
        "record",
    ),
    "a RECORD whose record is null": ('{"type": "RECORD", "stream": "people", "record": null}\n', "record"),
    "a RECORD with no stream": ('{"type": "RECORD", "record": {"email": "x@example.com"}}\n', "stream"),
    "a SCHEMA with no properties": (
        '{"type": "SCHEMA", "stream": "orders", "schema": {"type": "object"}}\n',
        "properties",
    ),
}


def emails_sent(sandbox) -> set[str]:
    """Every email that reached the sandbox in any request body, whatever the answer."""
    sent = set()
    for call in sandbox.requests():
        body = call["body"]
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and "email" in item:
                sent.add(item["email"])
    return sent


def last_stderr_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("bad_line", [pytest.param(v, id=k) for k, v in FATAL.items()])
def test_bad_input_stops_with_one_clear_line_after_delivering_what_came_before(sandbox, bad_line):
    line, reason = bad_line
    # batching on: the two people wait in an open batch when the bad line arrives
    run = run_target(sandbox_config(sandbox, batch_records=True, batch_size=50), [*BEFORE, line, *AFTER])
    assert run.returncode == 1, run.stderr
    last = last_stderr_line(run.stderr)
    assert last.startswith("target-encharge: error: "), run.stderr
    assert reason in last
    assert len(last) < 500
    assert "Traceback" not in run.stderr
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com"}
    assert emails_sent(sandbox) == {"p0@example.com", "p1@example.com"}  # nothing after the bad line
    assert run.states == [{"read": 2}]


@pytest.mark.subprocess  # the locale is the process's
@pytest.mark.parametrize("io_encoding", ["utf-8", "utf-8:strict", "latin-1"])
def test_bytes_that_are_not_utf8_are_found_by_line_whatever_the_locale(sandbox, io_encoding):
    # a strict UTF-8 locale decodes stdin in chunks: the lines before the bad one must not be lost with it
    bad = b'{"type": "RECORD", "stream": "people", "record": {"email": "caf\xe9@example.com"}}\n'
    run = run_target(sandbox_config(sandbox), [*BEFORE, bad, *AFTER], env={"PYTHONIOENCODING": io_encoding})
    assert run.returncode == 1
    assert last_stderr_line(run.stderr) == (
        "target-encharge: error: input line 5 is not UTF-8 text; nothing after it was read"
    )
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com"}
    assert run.states == [{"read": 2}]


def test_a_line_cut_off_at_the_end_of_input_is_reported_and_the_rest_delivered(sandbox):
    # the tap died mid-write: the last line has no end
    run = run_target(sandbox_config(sandbox), [*BEFORE, '{"type": "RECORD", "stream": "people", "record": {"em'])
    assert run.returncode == 1
    assert last_stderr_line(run.stderr).startswith("target-encharge: error: input line 5 is not valid JSON")
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com"}
    assert run.states == [{"read": 2}]


def test_records_of_the_wrong_types_are_each_dead_lettered_and_the_good_ones_delivered(sandbox):
    props = {
        "email": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": ["number", "null"]},
        "vip": {"type": "boolean"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
        "labels": {"type": "array", "items": {"type": "string"}},
    }
    wrong = [
        {"age": "forty"},
        {"age": 1.5},
        {"score": "high"},
        {"vip": "yes"},
        {"address": "Main St"},
        {"address": {"city": 7}},
        {"labels": "a,b"},
        {"labels": [1, 2]},
        {"email": None},
        {"email": 42},
        {"age": None},
    ]
    messages = [schema("people", props, ["email"])]
    for i, fields in enumerate(wrong):
        messages.append(record("people", {"email": f"bad{i}@example.com", **fields}))
        messages.append(record("people", {"email": f"good{i}@example.com", "age": i, "labels": ["x"]}))
    messages.append(state({"done": True}))
    run = run_target(sandbox_config(sandbox, dead_letter_path="@work/dead.jsonl", max_failures=-1), messages)
    assert run.returncode == 0, run.stderr
    dead = run.file_lines("dead.jsonl")
    assert len(dead) == len(wrong)
    for letter, sent in zip(
        sorted(dead, key=lambda d: str(d["record"].get("email"))),
        sorted([{"email": f"bad{i}@example.com", **f} for i, f in enumerate(wrong)], key=lambda r: str(r.get("email"))),
        strict=True,
    ):
        assert letter["record"] == sent  # the record as the tap sent it
        assert letter["reason"].startswith("refused before sending: does not match its stream's SCHEMA")
        assert letter["stream"] == "people" and letter["status"] is None
    assert {p["email"] for p in sandbox.people()} == {f"good{i}@example.com" for i in range(len(wrong))}
    assert not [e for e in emails_sent(sandbox) if isinstance(e, str) and e.startswith("bad")]
    assert run.states == [{"done": True}]


def test_a_wrong_type_stops_the_run_by_default_and_what_came_before_is_delivered(sandbox):
    sandbox.set_faults(latency_ms=30)  # the people before it are still in flight when it is refused
    messages = [*BEFORE, record("people", {"email": "bad@example.com", "score": "high"}), *AFTER]
    run = run_target(sandbox_config(sandbox, max_concurrency=1), messages)
    assert run.returncode == 1
    assert "max_failures=0" in last_stderr_line(run.stderr)
    assert "Traceback" not in run.stderr
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com"}
    assert "late@example.com" not in emails_sent(sandbox) and "bad@example.com" not in emails_sent(sandbox)
    assert run.states == [{"read": 2}]


def test_a_schema_change_mid_stream_applies_the_new_schema(sandbox):
    old = {"email": {"type": "string"}, "plan": {"type": "string"}, "seats": {"type": "integer"}}
    new = {
        "email": {"type": "string"},
        "plan": {"type": "integer"},
        "seats": {"type": "integer"},
        "signedUpAt": {"type": "string", "format": "date-time"},
    }
    run = run_target(
        sandbox_config(sandbox, dead_letter_path="@work/dead.jsonl", max_failures=-1, batch_records=True),
        [
            schema("people", old, ["email"]),
            record("people", {"email": "a@example.com", "plan": "pro", "seats": 3}),
            state({"phase": "old"}),
            schema("people", new, ["email"]),
            record("people", {"email": "b@example.com", "plan": 2, "signedUpAt": "2024-03-01T10:00:00+00:00"}),
            record("people", {"email": "c@example.com", "plan": "pro"}),  # fine before, wrong now
            state({"phase": "new"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="a@example.com")["plan"] == "pro"
    b = sandbox.person(email="b@example.com")
    assert b["plan"] == 2 and b["signedUpAt"].startswith("2024-03-01T10:00:00")
    assert sandbox.person(email="c@example.com") is None
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["record"]["email"] == "c@example.com" and "does not match" in dead["reason"]
    assert run.states == [{"phase": "old"}, {"phase": "new"}]


def test_a_changed_key_property_is_required_from_then_on(sandbox):
    props = {"email": {"type": ["string", "null"]}, "userId": {"type": ["string", "null"]}}
    run = run_target(
        sandbox_config(sandbox),
        [
            schema("people", props, ["email"]),
            record("people", {"email": "a@example.com"}),
            schema("people", props, ["userId"]),
            record("people", {"userId": "u2"}),
            record("people", {"email": "c@example.com"}),
        ],
    )
    assert run.returncode == 1
    assert "userId" in last_stderr_line(run.stderr)
    assert {(p.get("email"), p.get("userId")) for p in sandbox.people()} == {("a@example.com", None), (None, "u2")}


def test_an_unknown_message_type_is_skipped_with_a_warning_naming_its_line(sandbox):
    messages = [*BEFORE, '{"type": "HEARTBEAT", "at": "2024-03-01"}\n', *AFTER]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    warning = next(line for line in run.stderr.splitlines() if "HEARTBEAT" in line)
    assert "input line 5" in warning
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com", "late@example.com"}
    assert run.states == [{"read": 2}, {"read": "late"}]


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param(["\n", "   \n", "\t\n"], id="blank lines only"),
        pytest.param([schema("people", PERSON_PROPS, ["email"])], id="a SCHEMA and no records"),
        pytest.param(["\n", schema("people", PERSON_PROPS, ["email"]), "\n"], id="a SCHEMA between blank lines"),
    ],
)
def test_input_with_no_records_sends_nothing_and_succeeds(sandbox, messages):
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert not [r for r in sandbox.requests() if r["method"] != "GET"]


def test_a_state_with_no_records_before_it_is_relayed_at_once(sandbox):
    run = run_target(sandbox_config(sandbox), [state({"bookmarks": {"people": {"since": "2024-01-01"}}})])
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmarks": {"people": {"since": "2024-01-01"}}}]
    assert sandbox.requests() == []
