"""What a new user sees at start and at the end of a run (issue 15): each stream's routing as it arrives, the
`streams` keys that matched nothing, emails merged by case. In-process against the sandbox."""

from __future__ import annotations

from helpers import people, record, run_target, sandbox_config, schema


def test_each_streams_routing_is_logged_as_it_arrives_saying_when_it_is_the_default(sandbox):
    config = sandbox_config(sandbox, streams={"tags": {"endpoint": "add_tag"}})
    messages = [
        *people(1),
        schema("tags", {"email": {"type": "string"}, "tag": {"type": "string"}}),
        record("tags", {"email": "p0@example.com", "tag": "vip"}),
    ]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    (people_line,) = [line for line in run.stderr.splitlines() if "Stream 'people' goes to" in line]
    assert "create_or_update_person" in people_line and "upsert" in people_line and "batches of up to" in people_line
    assert "default" in people_line
    (tags_line,) = [line for line in run.stderr.splitlines() if "Stream 'tags' goes to" in line]
    assert "add_tag" in tags_line and "one record per call" in tags_line and "default" not in tags_line


def test_a_streams_key_matching_no_stream_is_warned_about_naming_the_streams_that_came(sandbox):
    config = sandbox_config(sandbox, streams={"customer_tags": {"endpoint": "add_tag"}})
    run = run_target(config, people(2, stream="public-customer_tags"))
    warnings = [line for line in run.stderr.splitlines() if "streams.customer_tags" in line]
    assert len(warnings) == 1
    assert "matched no stream" in warnings[0] and "'public-customer_tags'" in warnings[0]


def test_emails_differing_only_in_case_are_warned_about_once_with_a_count_and_an_example(sandbox):
    spellings = ["ann@example.com", "Ann@example.com", "ANN@example.com", "bob@example.com", "Bob@Example.com"]
    messages = [*people(0), *[record("people", {"email": e}) for e in spellings]]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "differing only in case" in line]
    assert len(warnings) == 1
    assert "3 record(s)" in warnings[0] and "'ann@example.com' and 'Ann@example.com'" in warnings[0]
    assert len(sandbox.people()) == 2


def test_no_case_warning_when_every_email_is_spelled_one_way(sandbox):
    run = run_target(sandbox_config(sandbox), [*people(3), record("people", {"email": "p0@example.com"})])
    assert "differing only in case" not in run.stderr


def test_repeated_identical_failures_are_logged_once_with_a_count(sandbox):
    bad = [
        schema("people", {"email": {"type": "string"}, "plan": {"type": "string"}}, ["email"]),
        *[record("people", {"email": f"p{i}@example.com", "plan": 5}) for i in range(20)],
    ]
    run = run_target(sandbox_config(sandbox, max_failures=-1, dead_letter_path="@work/dead.jsonl"), bad)
    assert run.returncode == 0, run.stderr
    assert len(run.file_lines("dead.jsonl")) == 20  # every one kept
    failed = [line for line in run.stderr.splitlines() if "failed:" in line or "like this" in line]
    assert len(failed) == 2, failed
    assert "19 more record(s)" in failed[1]
