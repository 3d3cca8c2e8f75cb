"""What Encharge answered: the response stream (to a file, or on stdout for another target), the summary in
STATE, dry runs, test sends, progress, and that no key shows up in any of it."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import people, record, run_target, sandbox_config, schema, state

from target_encharge.sandbox import Sandbox

TAG_PROPS = {"email": {"type": ["string", "null"]}, "tag": {"type": ["string", "null"]}}
EVENT_PROPS = {"name": {"type": "string"}, "email": {"type": "string"}, "plan": {"type": "string"}}
# people one call each (batching is on by default for them): each call's response is looked at on its own
STREAMS = {"people": {"batch_records": False}, "tags": {"endpoint": "add_tag"}, "events": {"endpoint": "track_event"}}
ROOT = Path(__file__).resolve().parent.parent


def json_lines(text: str) -> list[dict]:
    """The JSON lines among the log lines of stderr (previews, test-send answers)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def mixed_input() -> list[dict]:
    """Three people, a STATE, a tag for one of them and one for nobody (404), an event, a last STATE."""
    return [
        *people(3),
        state({"bookmarks": {"people": {"upto": 3}}}),
        schema("tags", TAG_PROPS),
        record("tags", {"email": "p0@example.com", "tag": "vip"}),
        record("tags", {"email": "ghost@example.com", "tag": "vip"}),
        schema("events", EVENT_PROPS),
        record("events", {"name": "Upgraded", "email": "p1@example.com", "plan": "pro"}),
        state({"bookmarks": {"people": {"upto": 3}, "tags": {"upto": 2}}}),
    ]


def sent(sandbox) -> list[dict]:
    """The calls that carried records (not the start-up checks)."""
    return [r for r in sandbox.requests() if r["method"] != "GET"]


def target_csv() -> str:
    exe = os.environ.get("TARGET_CSV") or str(ROOT / ".tools/target-csv/bin/target-csv")
    assert Path(exe).exists(), f"{exe} is missing: `make install` installs the downstream target the tests use"
    return exe


# response_output: stream


@pytest.mark.subprocess  # the process's whole stdout, byte for byte, is a Singer stream
def test_the_response_stream_on_stdout_loads_into_a_real_downstream_target(sandbox, tmp_path):
    run = run_target(
        sandbox_config(sandbox, response_output="stream", response_stream_path="-", streams=STREAMS, max_failures=1),
        mixed_input(),
    )
    assert run.returncode == 0, run.stderr
    messages = run.lines
    assert {m["type"] for m in messages} == {"SCHEMA", "RECORD", "STATE"}  # a pure Singer stream, nothing else
    assert messages[0]["type"] == "SCHEMA" and messages[0]["stream"] == "encharge_responses"
    assert [m["value"] for m in messages if m["type"] == "STATE"] == [
        {"bookmarks": {"people": {"upto": 3}}},
        {"bookmarks": {"people": {"upto": 3}, "tags": {"upto": 2}}},
    ]

    (tmp_path / "csv.json").write_text(json.dumps({"output_path": str(tmp_path / "out")}))
    (tmp_path / "out").mkdir()
    downstream = subprocess.run(
        [target_csv(), "--config", str(tmp_path / "csv.json")],
        input=run.stdout.encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert downstream.returncode == 0, downstream.stderr.decode()[-2000:]
    # the downstream target relays the tap's last state: STATE messages made it through
    assert json.loads(downstream.stdout.decode().splitlines()[-1]) == messages[-1]["value"]
    with (tmp_path / "out" / "encharge_responses.csv").open() as f:
        rows = list(csv.DictReader(f))
    calls = sent(sandbox)
    # one row per call; the tag whose person is unknown waits for the end of the run, then is called once (issue 25)
    assert len(rows) == len(calls) == 6
    assert sorted(int(r["status_code"]) for r in rows) == sorted(c["status"] for c in calls) == [200] * 4 + [201, 404]
    by_status = {int(r["status_code"]): r for r in rows}
    missing = by_status[404]
    assert missing["success"] == "False" and missing["stream"] == "tags" and missing["endpoint"] == "add_tag"
    assert "No person with email" in missing["error"]
    assert json.loads(missing["identifiers"]) == [{"email": "ghost@example.com"}]
    assert json.loads(missing["response"])["error"]["message"].startswith("No person")
    person_rows = [r for r in rows if r["stream"] == "people"]
    for row in person_rows:
        (ids,) = json.loads(row["identifiers"])
        answer = json.loads(row["response"])
        assert answer["users"][0]["id"] == sandbox.person(email=ids["email"])["id"]  # the id Encharge assigned
        assert row["method"] == "POST" and row["url"] == sandbox.api_url + "/people" and row["attempts"] == "1"
        assert row["time"]


def test_the_response_stream_to_a_file_counts_attempts_and_leaves_stdout_to_the_taps_state(sandbox):
    sandbox.set_faults(error_rate=0.4)
    messages = [*people(30), state({"upto": 30})]
    run = run_target(
        sandbox_config(
            sandbox,
            response_output="stream",
            response_stream_path="@work/responses.jsonl",
            batch_records=True,
            batch_size=4,
            max_retries=30,
        ),
        messages,
    )
    assert run.returncode == 0, run.stderr
    assert run.lines == [{"upto": 30}]  # stdout: the tap's state only, as it was
    header, *records = run.file_lines("responses.jsonl")
    assert header["type"] == "SCHEMA"
    assert sorted(header["schema"]["properties"]) == sorted(
        [
            "stream",
            "endpoint",
            "method",
            "url",
            "status_code",
            "success",
            "attempts",
            "records",
            "identifiers",
            "response",
            "error",
            "time",
            "duration_ms",
        ]
    )
    calls = [r["record"] for r in records]
    assert len(calls) == 8 and all(c["success"] and c["status_code"] == 200 for c in calls)
    assert sum(c["attempts"] for c in calls) == len(sent(sandbox))  # every retry counted, on its call
    assert any(c["attempts"] > 1 for c in calls)
    identified = sorted(i["email"] for c in calls for i in json.loads(c["identifiers"]))
    assert identified == sorted(f"p{i}@example.com" for i in range(30))
    assert sorted(c["records"] for c in calls) == [2] + [4] * 7


def test_a_refused_batch_and_each_piece_it_is_split_into_are_response_records(sandbox):
    records = [record("people", {"email": f"ok{i}@example.com"}) for i in range(7)]
    records.insert(5, record("people", {"email": {"not": "an email"}}))
    run = run_target(
        sandbox_config(
            sandbox,
            response_output="stream",
            response_stream_path="@work/r.jsonl",
            batch_records=True,
            batch_size=8,
            max_failures=1,
            max_concurrency=1,
        ),
        [schema("people", {"email": {}}), *records],
    )
    assert run.returncode == 0, run.stderr
    calls = [r["record"] for r in run.file_lines("r.jsonl") if r["type"] == "RECORD"]
    assert [(c["status_code"], c["records"]) for c in calls] == [
        (c["status"], len(c["body"])) for c in sent(sandbox)
    ]  # one record per call, in order
    assert [c["status_code"] for c in calls][:1] == [400] and calls[0]["records"] == 8
    assert [c["records"] for c in calls if c["status_code"] == 400][-1] == 1  # down to the record at fault
    row = re.search(r"\npeople\s+8\s+(\d+)\s+7\s+1\s+0\s+7\n", run.stderr)  # the summary counts every call too
    assert row and int(row.group(1)) == len(calls)


def test_a_large_answer_is_truncated_in_the_response_record(sandbox):
    run = run_target(
        sandbox_config(
            sandbox, response_output="stream", response_stream_path="@work/r.jsonl", batch_records=True, batch_size=60
        ),
        people(60),
    )
    assert run.returncode == 0, run.stderr
    (call,) = [r["record"] for r in run.file_lines("r.jsonl") if r["type"] == "RECORD"]
    assert call["records"] == 60
    answer = json.loads(call["response"])
    assert answer["truncated"] is True and len(answer["preview"]) == 2000  # of an answer of some 8 kB


# response_output: state


def test_state_keeps_the_taps_keys_and_adds_one_summary_key(sandbox):
    run = run_target(sandbox_config(sandbox, response_output="state", streams=STREAMS, max_failures=1), mixed_input())
    assert run.returncode == 0, run.stderr
    first, last = run.states
    assert {k: v for k, v in first.items() if k != "target_encharge"} == {"bookmarks": {"people": {"upto": 3}}}
    assert set(last) == {"bookmarks", "target_encharge"}
    assert last["bookmarks"] == {"people": {"upto": 3}, "tags": {"upto": 2}}
    summary = last["target_encharge"]
    # the tag whose person is unknown waits for the end of the run, then is called once (2 calls); "created" is
    # what the sync ledger did not know before (events without an id are not kept in it)
    assert summary["streams"] == {
        "people": {"records": 3, "calls": 3, "succeeded": 3, "failed": 0, "retried": 0, "created": 3},
        "tags": {"records": 2, "calls": 2, "succeeded": 1, "failed": 1, "retried": 0, "created": 1},
        "events": {"records": 1, "calls": 1, "succeeded": 1, "failed": 0, "retried": 0, "created": 0},
    }
    (error,) = summary["last_errors"]
    assert error["stream"] == "tags" and error["identifiers"] == {"email": "ghost@example.com"}
    assert "404" in error["reason"]


def test_the_state_summary_stays_small_for_100k_records_in_many_streams(sandbox):
    n, streams = 100_000, 30
    messages = [
        schema(f"s{s:02d}", {"email": {"type": ["string", "null"]}, "n": {"type": "integer"}}) for s in range(streams)
    ]
    for i in range(n):
        rec = {"n": i} if i % 5000 == 7 else {"email": f"u{i}@example.com", "n": i}  # 20 without an email
        messages.append(record(f"s{i * streams // n:02d}", rec))
        if (i + 1) % 1000 == 0:
            messages.append(state({"bookmarks": {"upto": i + 1}}))
    run = run_target(
        sandbox_config(sandbox, response_output="state", batch_records=True, batch_size=100, max_failures=-1),
        messages,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 100
    assert max(len(line.encode()) for line in lines) < 4096  # bounded whatever the volume
    states = run.states
    assert [s["bookmarks"]["upto"] for s in states] == list(range(1000, n + 1, 1000))
    summary = states[-1]["target_encharge"]
    assert len(summary["streams"]) == 20 and summary["other_streams"]["streams"] == 10
    named = list(summary["streams"].values())
    assert sum(c["records"] for c in named) + summary["other_streams"]["records"] == n
    assert sum(c["failed"] for c in named) + summary["other_streams"]["failed"] == 20
    assert len(summary["last_errors"]) == 5
    assert len(sandbox.people()) == n - 20


# dry run


@pytest.mark.parametrize("preview_path", [None, "@work/previews.jsonl"])
def test_a_dry_run_sends_nothing_and_shows_every_request(sandbox, preview_path):
    settings = {"preview_path": preview_path} if preview_path else {}
    messages = [*mixed_input(), record("tags", {"email": "p2@example.com"})]  # no tag: refused
    run = run_target(
        sandbox_config(
            sandbox,
            dry_run=True,
            streams=STREAMS,
            dead_letter_path="@work/dead.jsonl",
            max_failures=1,
            response_output="state",
            **settings,
        ),
        messages,
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.requests() == []  # nothing written to Encharge, and no start-up check either
    previews = run.file_lines("previews.jsonl") if preview_path else json_lines(run.stderr)
    assert run.stdout == ""  # under Meltano, stdout stays free of anything that is not state (previews on stderr)
    assert all("bookmarks" not in p for p in previews)  # no STATE in a dry run
    requests = [p for p in previews if "refused" not in p]
    assert [(p["stream"], p["method"]) for p in requests] == [("people", "POST")] * 3 + [("tags", "POST")] * 2 + [
        ("events", "POST")
    ]
    person = requests[0]
    assert person["url"] == sandbox.api_url + "/people"
    assert person["headers"]["X-Encharge-Token"] == "***" and person["headers"]["Content-Type"] == "application/json"
    assert person["body"] == [{"email": "p0@example.com", "firstName": "Person 0", "plan": "pro", "score": 0.5}]
    event = requests[-1]
    assert event["url"] == sandbox.ingest_url and event["headers"]["X-Encharge-Token"] == "***"
    assert event["body"] == {"name": "Upgraded", "user": {"email": "p1@example.com"}, "properties": {"plan": "pro"}}
    (refused,) = [p for p in previews if "refused" in p]
    assert refused["stream"] == "tags" and "no tag" in refused["refused"]
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["identifiers"] == {"email": "p2@example.com"} and "no tag" in dead["reason"]
    assert "dry run: nothing was sent" in run.stderr


# test send


def test_a_test_send_sends_the_first_record_of_each_stream_and_shows_the_full_answer(sandbox):
    run = run_target(sandbox_config(sandbox, test_send=True, streams=STREAMS, max_failures=1), mixed_input())
    assert run.returncode == 0, run.stderr
    calls = {c["path"]: c for c in sent(sandbox)}
    assert sorted(calls) == ["/ingest/v1", "/v1/people", "/v1/tags"]  # one call per stream
    assert [p["email"] for p in calls["/v1/people"]["body"]] == ["p0@example.com"]
    assert run.stdout == ""  # answers on stderr: stdout carries only Singer messages, and a test send has no STATE
    shown = {s["stream"]: s for s in json_lines(run.stderr)}  # one line per call
    assert len(json_lines(run.stderr)) == 3 and sorted(shown) == ["events", "people", "tags"]
    person = shown["people"]
    assert person["headers"]["X-Encharge-Token"] == "***"
    assert person["body"] == [{"email": "p0@example.com", "firstName": "Person 0", "plan": "pro", "score": 0.5}]
    answer = person["response"]
    assert answer["status"] == 200 and answer["success"] is True and answer["attempts"] == 1
    assert answer["headers"]["Content-Type"].startswith("application/json")
    assert answer["body"]["users"][0]["id"] == sandbox.person(email="p0@example.com")["id"]
    assert shown["tags"]["response"]["status"] == 201 and shown["tags"]["response"]["body"] is None
    assert shown["events"]["response"]["status"] == 200
    assert "test send: the first record of each stream; 3 other records not sent" in run.stderr


# progress and the end-of-run summary


def test_long_runs_log_progress_and_end_with_a_summary_table(sandbox):
    sandbox.set_faults(latency_ms=40)
    run = run_target(
        sandbox_config(sandbox, progress_interval=0.2, max_concurrency=2, streams=STREAMS, max_failures=1),
        [*people(40), *mixed_input()[4:]],
    )
    assert run.returncode == 0, run.stderr
    progress = re.findall(
        r"Progress: ([\d,]+) records handled \(([\d,]+)/s\), ([\d,]+) failed, ([\d,]+) records "
        r"waiting, ([\d,]+) calls in flight",
        run.stderr,
    )
    assert len(progress) >= 2
    handled = [int(p[0].replace(",", "")) for p in progress]
    assert handled == sorted(handled) and handled[-1] <= 43
    summary = run.stderr[run.stderr.index("Summary: ") :].splitlines()
    assert re.match(r"Summary: 43 records handled in [\d.]+s \([\d,]+/s\), 1 failed", summary[0])
    assert summary[1].split() == ["stream", "records", "calls", "succeeded", "failed", "retried", "created"]
    rows = {line.split()[0]: line.split()[1:] for line in summary[2:6]}
    assert rows["people"] == ["40", "40", "40", "0", "0", "40"]
    assert rows["tags"] == ["2", "2", "1", "1", "0", "1"]  # the unknown person's tag: called once, at the end
    assert rows["total"] == ["43", "43", "42", "1", "0", "41"]


# secrets


API_KEY = "ak-QX7-distinctive-api-key-9f3a"
WRITE_KEY = "wk-QX7-distinctive-write-key-77b1"


def test_no_key_appears_in_any_output_even_at_debug():
    """Every output of every mode, and the error of a refused key, with logs at DEBUG: never a key."""
    debug = {"LOGLEVEL": "DEBUG", "TARGET_ENCHARGE_LOGLEVEL": "DEBUG"}
    streams = {**STREAMS, "manual": {"endpoint": "manual", "url": f"/people?token={API_KEY}"}}
    messages = [
        *mixed_input(),
        schema("manual", TAG_PROPS),
        record("manual", {"email": "m@example.com"}),
        record("tags", {"email": "p2@example.com"}),
        state({"done": True}),
    ]
    modes = [
        {"response_output": "stream", "response_stream_path": "-"},
        {"response_output": "stream", "response_stream_path": "@work/responses.jsonl"},
        {"response_output": "state"},
        {"dry_run": True},
        {"dry_run": True, "preview_path": "@work/previews.jsonl"},
        {"test_send": True},
    ]
    outputs = []
    with Sandbox(api_key=API_KEY, write_key=WRITE_KEY) as sandbox:
        for mode in modes:
            sandbox.reset()
            run = run_target(
                sandbox_config(
                    sandbox,
                    api_key=API_KEY,
                    write_key=WRITE_KEY,
                    streams=streams,
                    max_failures=5,
                    dead_letter_path="@work/dead.jsonl",
                    **mode,
                ),
                messages,
                env=debug,
            )
            assert run.returncode == 0, run.stderr[-2000:]
            assert "DEBUG" in run.stderr
            files = {
                p.name: p.read_bytes().decode("utf-8", "replace")  # the sync ledger (SQLite) too
                for p in run.workdir.iterdir()
                if p.name != "config.json"
            }
            assert "dead.jsonl" in files
            outputs.append((mode, run.stdout, run.stderr, files))
        for key, stream in (("api_key", "people"), ("write_key", "events")):
            wrong = sandbox_config(sandbox, api_key=API_KEY, write_key=WRITE_KEY, streams=STREAMS)
            wrong[key] = wrong[key][:-4] + "0000"  # a distinctive key Encharge refuses
            run = run_target(wrong, [m for m in messages if m.get("stream") == stream], env=debug)
            assert run.returncode == 1 and key in run.error_line
            outputs.append(({key: "refused"}, run.stdout, run.stderr, {}))
    for mode, stdout, stderr, files in outputs:
        for where, text in [("stdout", stdout), ("stderr", stderr), *files.items()]:
            for secret in (API_KEY, WRITE_KEY, API_KEY[:-4], WRITE_KEY[:-4]):
                assert secret not in text, f"a key in {where} of {mode}"


@pytest.mark.parametrize("setting", ["response_stream_path", "preview_path", "dead_letter_path"])
def test_an_output_path_that_cannot_be_written_is_a_one_line_error(sandbox, setting):
    run = run_target(
        sandbox_config(
            sandbox,
            response_output="stream",
            dry_run=setting == "preview_path",
            **{setting: "/nonexistent/dir/out.jsonl"},
        ),
        people(1),
    )
    assert run.returncode == 1
    assert run.error_line == (
        f"target-encharge: error: {setting}: cannot write to '/nonexistent/dir/out.jsonl' (No such file or directory)"
    )
    assert "Traceback" not in run.stderr and sandbox.people() == []
