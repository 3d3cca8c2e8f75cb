"""Soak: 5,000 records through a faulty Encharge, and not one lost, doubled or miscounted.

The sandbox answers 20% of calls with 500, drops 5% of connections unanswered, and answers 429 with a short
Retry-After above 100 calls a second (seeded, so the faults are the same share every run). People go in
batches, tags and events one call each, 8 calls in flight. Everything must arrive exactly once, the last STATE
must come out, and the end-of-run summary must agree, to the call and the retry, with the response stream and
with what the sandbox logged.
"""

from __future__ import annotations

import collections
import re

import pytest
from helpers import PERSON_PROPS, record, run_target, sandbox_config, schema, state

from target_encharge.sandbox import Sandbox

pytestmark = pytest.mark.slow

PEOPLE, TAGGED, STATE_EVERY = 3500, 750, 250
ENDPOINTS = {"people": "POST /v1/people", "tags": "POST /v1/tags", "events": "POST /ingest/v1"}


def soak_input() -> list[dict]:
    """3,500 people; for 750 of them (each well after its own record) a tag and an event; a STATE every 250."""
    messages = [
        schema("people", PERSON_PROPS, ["email"]),
        schema("tags", {"email": {"type": "string"}, "tag": {"type": "string"}}),
        schema("events", {"name": {"type": "string"}, "email": {"type": "string"}, "n": {"type": "integer"}}),
    ]
    tagged = 0
    for i in range(PEOPLE):
        messages.append(record("people", {"email": f"s{i}@example.com", "firstName": f"Soak {i}", "score": i}))
        if i >= 100 and tagged < TAGGED and i % 4 == 0:
            person = f"s{i - 100}@example.com"
            messages.append(record("tags", {"email": person, "tag": f"t{tagged}"}))
            messages.append(record("events", {"name": "Soaked", "email": person, "n": tagged}))
            tagged += 1
        if i % STATE_EVERY == STATE_EVERY - 1:
            messages.append(state({"bookmarks": {"people": {"position": i + 1}}}))
    assert tagged == TAGGED
    return messages


def summary_table(stderr: str) -> dict[str, dict[str, int]]:
    """The end-of-run summary table on stderr, per stream (thousands separators allowed)."""
    lines = stderr.splitlines()
    start = max(i for i, line in enumerate(lines) if re.match(r"stream\s+records\s+calls\s+succeeded", line))
    header = lines[start].split()
    table = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(header) or not all(re.fullmatch(r"[\d,]+", c) for c in cells[1:]):
            break
        table[cells[0]] = {
            name: int(value.replace(",", "")) for name, value in zip(header[1:], cells[1:], strict=False)
        }
    return table


def test_five_thousand_records_under_500s_drops_and_429s_all_arrive_once_and_are_counted_exactly():
    with Sandbox(seed=20240301, error_rate=0.2, drop_rate=0.05, rate_limit=100, retry_after=0.2) as sandbox:
        config = sandbox_config(
            sandbox,
            max_concurrency=8,
            max_retries=100,  # patience: a tight rate limit can answer one call 429 many times in a row
            request_timeout=60,  # no timeouts: a call Encharge took is never sent again
            streams={
                "people": {"batch_records": True, "batch_size": 25},
                "tags": {"endpoint": "add_tag"},
                "events": {"endpoint": "track_event"},
            },
            response_output="stream",
            response_stream_path="@work/responses.jsonl",
            dead_letter_path="@work/dead.jsonl",
        )
        messages = soak_input()
        run = run_target(config, messages, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]

        # every record arrived, once
        people = {p["email"]: p for p in sandbox.people()}
        assert len(people) == PEOPLE
        assert all(people[f"s{i}@example.com"]["score"] == i for i in range(PEOPLE))
        tags = collections.Counter(tag for p in people.values() for tag in p.get("tags", []))
        assert tags == {f"t{n}": 1 for n in range(TAGGED)}
        events = sandbox.events()
        assert sorted(e["properties"]["n"] for e in events) == list(range(TAGGED))  # none lost, none doubled
        assert run.file_lines("dead.jsonl") == []

        # every STATE came out, in order, the last one last
        sent_states = [m["value"] for m in messages if m["type"] == "STATE"]
        assert run.states == sent_states

        # the faults really happened, on every endpoint
        logged = collections.Counter()
        for row in sandbox.state()["requests"]["counts"]:
            logged[(row["endpoint"], row["status"])] += row["count"]
        for endpoint in ENDPOINTS.values():
            for status in ("500", "dropped", "429"):
                assert logged[(endpoint, status)] > 0, (endpoint, status)

        # the summary is exact: against the input, the response stream, and the sandbox's own log
        table = summary_table(run.stderr)
        responses = [line["record"] for line in run.file_lines("responses.jsonl") if line["type"] == "RECORD"]
        expected_records = {"people": PEOPLE, "tags": TAGGED, "events": TAGGED}
        for stream, endpoint in ENDPOINTS.items():
            row = table[stream]
            mine = [r for r in responses if r["stream"] == stream]
            assert row["records"] == row["succeeded"] == expected_records[stream]
            assert row["failed"] == 0
            assert row["calls"] == len(mine) == sum(n for (e, s), n in logged.items() if e == endpoint and s[0] == "2")
            assert all(r["success"] for r in mine)
            assert sum(r["records"] for r in mine) == expected_records[stream]
            assert row["retried"] == sum(r["attempts"] > 1 for r in mine) > 0
            # every attempt the target counted is one request the sandbox logged, and the other way round
            assert sum(r["attempts"] for r in mine) == sum(n for (e, _), n in logged.items() if e == endpoint)
        assert max(len(c["body"]) for c in sandbox.requests() if c["path"] == "/v1/people" and c["body"]) <= 25
