"""Bad input gets a one-line reason and a non-zero exit; what was read before it is still delivered."""

from __future__ import annotations

from helpers import people, record, run_target, sandbox_config, schema, state


def test_a_malformed_line_stops_with_its_line_number_after_delivering_what_came_before(sandbox):
    messages = [
        *people(2),
        state({"n": 2}),
        '{"type": "RECORD", "stream": "people", "record": {"em\n',
        *people(1, start=5),
    ]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 1
    assert run.error_line.startswith("target-encharge: error: input line 5 is not valid JSON")
    assert "\n" not in run.error_line
    assert {p["email"] for p in sandbox.people()} == {"p0@example.com", "p1@example.com"}
    assert run.states == [{"n": 2}]


def test_a_record_before_its_schema_stops_the_run(sandbox):
    run = run_target(sandbox_config(sandbox), [record("people", {"email": "a@example.com"})])
    assert run.returncode == 1
    assert "before a corresponding schema" in run.error_line
    assert sandbox.people() == []


def test_non_utf8_input_stops_with_a_clear_reason(sandbox):
    run = run_target(sandbox_config(sandbox), [b'{"type": "STATE", "value": {"a": "\xff\xfe"}}\n'])
    assert run.returncode == 1
    assert "not UTF-8" in run.error_line


def test_a_record_that_does_not_match_its_schema_is_dead_lettered(sandbox):
    run = run_target(
        sandbox_config(sandbox, dead_letter_path="@work/dead.jsonl", max_failures=1),
        [
            schema("people", {"email": {"type": "string"}, "score": {"type": "number"}}),
            record("people", {"email": "a@example.com", "score": "high"}),
            record("people", {"email": "b@example.com", "score": 3}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (dead,) = run.file_lines("dead.jsonl")
    assert "does not match" in dead["reason"] and dead["record"]["email"] == "a@example.com"
    assert [p["email"] for p in sandbox.people()] == ["b@example.com"]


def test_empty_input_sends_nothing_and_succeeds(sandbox):
    run = run_target(sandbox_config(sandbox), [])
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert sandbox.requests() == []


def test_plain_http_to_another_host_is_refused(sandbox):
    run = run_target(sandbox_config(sandbox, api_url="http://api.example.com/v1"), people(1))
    assert run.returncode == 1
    assert "https" in run.error_line and "api_url" in run.error_line
