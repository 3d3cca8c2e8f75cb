"""The sync ledger as an hourly user relies on it (issue 13): an unchanged rerun sends nothing, a changed record is
sent alone, custom objects re-sync without duplicates, failures are delivered by the next run, events with an id
arrive once, resync sends everything, dry runs leave the ledger alone, a bad ledger stops the run in one line.

Each behaviour runs on SQLite (the default) and on a real PostgreSQL server (tests/postgres.py starts one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
from helpers import (
    PERSON_PROPS,
    people,
    record,
    run_target,
    run_target_process,
    sandbox_config,
    schema,
    state,
    target_command,
)

from target_encharge.sandbox import Sandbox

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def synced(sandbox: Sandbox, ledger_url: str, **settings: t.Any) -> dict:
    return sandbox_config(sandbox, ledger_url=ledger_url, response_output="state", **settings)


def summary(run: t.Any, stream: str) -> dict:
    return run.states[-1]["target_encharge"]["streams"].get(stream, {})


def changed_people(n: int, changed: t.Iterable[int]) -> list[dict]:
    messages = people(n)
    for i in changed:
        messages[i + 1]["record"]["plan"] = "enterprise"
    return messages


def test_an_unchanged_rerun_sends_no_write_and_counts_unchanged(sandbox, ledger_url):
    first = run_target(synced(sandbox, ledger_url), [*people(300), state({"b": 1})])
    assert first.returncode == 0, first.stderr
    assert len(sandbox.people()) == 300
    sandbox.clear_requests()
    again = run_target(synced(sandbox, ledger_url), [*people(300), state({"b": 2})])
    assert again.returncode == 0, again.stderr
    assert sandbox.write_counts() == {}
    assert summary(again, "people")["unchanged"] == 300
    assert again.states[-1]["b"] == 2
    assert "unchanged" in again.stderr  # the summary table


def test_ten_changed_of_three_hundred_sends_ten(sandbox, ledger_url):
    assert run_target(synced(sandbox, ledger_url), people(300)).returncode == 0
    sandbox.clear_requests()
    run = run_target(synced(sandbox, ledger_url), [*changed_people(300, range(0, 300, 30)), state({"b": 1})])
    assert run.returncode == 0, run.stderr
    sent = [p for r in sandbox.requests(writes_only=True) for p in r["body"]]
    assert sorted(p["email"] for p in sent) == sorted(f"p{i}@example.com" for i in range(0, 300, 30))
    assert sandbox.person(email="p30@example.com")["plan"] == "enterprise"
    assert summary(run, "people")["unchanged"] == 290


def test_skip_unchanged_off_and_resync_send_everything(sandbox, ledger_url):
    assert run_target(synced(sandbox, ledger_url), people(50)).returncode == 0
    for settings in ({"skip_unchanged": False}, {"resync": True}):
        sandbox.clear_requests()
        run = run_target(synced(sandbox, ledger_url, **settings), [*people(50), state({"b": 1})])
        assert run.returncode == 0, run.stderr
        assert sum(len(r["body"]) for r in sandbox.requests(writes_only=True)) == 50
    sandbox.clear_requests()
    run = run_target(synced(sandbox, ledger_url), [*people(50), state({"b": 1})])  # the ledger was refreshed
    assert sandbox.write_counts() == {}


def objects(n: int, changed: t.Iterable[int] = (), start: int = 0) -> list[dict]:
    props = {"externalId": {"type": "string"}, "name": {"type": "string"}, "seats": {"type": "integer"}}
    changed = set(changed)
    return [schema("companies", props)] + [
        record("companies", {"externalId": f"c{i}", "name": f"Company {i}", "seats": 10 + (i in changed)})
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("duplicates", [False, True], ids=["409-on-create", "stores-duplicates"])
def test_custom_objects_resync_with_changes_and_never_duplicate(sandbox, ledger_url, duplicates):
    sandbox.set_options(duplicate_objects=duplicates)
    config = synced(
        sandbox, ledger_url, endpoint="create_custom_object", object_name="company", dead_letter_path="@work/dead.jsonl"
    )
    first = run_target(config, objects(40))
    assert first.returncode == 0, first.stderr
    for _ in range(2):  # again and again: 5 changed, 5 new
        run = run_target(config, [*objects(45, changed=range(5)), state({"b": 1})])
        assert run.returncode == 0, run.stderr
        assert run.file_lines("dead.jsonl") == []
    stored = sandbox.objects("company")
    assert sorted(o["externalId"] for o in stored) == sorted(f"c{i}" for i in range(45))
    assert {o["externalId"]: o["seats"] for o in stored}["c3"] == 11
    assert not any(r["status"] == 409 for r in sandbox.requests())  # the ledger knew them: no create tried


def test_an_object_in_encharge_but_not_in_the_ledger_is_updated_not_failed(sandbox, ledger_url):
    sandbox.seed(objects={"company": [{"externalId": "c1", "name": "Old name"}]})
    config = synced(
        sandbox, ledger_url, endpoint="create_custom_object", object_name="company", dead_letter_path="@work/dead.jsonl"
    )
    run = run_target(config, [*objects(3), state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert run.file_lines("dead.jsonl") == []
    assert sorted(o["name"] for o in sandbox.objects("company")) == ["Company 0", "Company 1", "Company 2"]
    sandbox.clear_requests()
    assert run_target(config, objects(3)).returncode == 0
    assert sandbox.write_counts() == {}


def test_failures_that_can_pass_are_delivered_by_the_next_run(sandbox, ledger_url):
    sandbox.set_faults(error_rate=0.3)
    config = synced(
        sandbox,
        ledger_url,
        max_retries=0,
        max_failures=-1,
        batch_records=False,
        max_concurrency=1,
        dead_letter_path="@work/dead.jsonl",
    )
    first = run_target(config, [*people(40), state({"b": 1})])
    failed = {d["record"]["email"] for d in first.file_lines("dead.jsonl")}
    assert failed, "the sandbox should have failed some calls"
    assert len(sandbox.people()) == 40 - len(failed)
    sandbox.set_faults(error_rate=0)
    # the next hour the incremental tap has nothing new for the stream: only its SCHEMA and STATE
    second = run_target(config, [schema("people", PERSON_PROPS, ["email"]), state({"b": 2})])
    assert second.returncode == 0, second.stderr
    assert len(sandbox.people()) == 40
    assert summary(second, "people")["retried_from_earlier_runs"] == len(failed)
    third = run_target(config, [schema("people", PERSON_PROPS, ["email"]), state({"b": 3})])
    assert summary(third, "people").get("retried_from_earlier_runs", 0) == 0


def test_records_refused_for_their_content_wait_for_the_source(sandbox, ledger_url):
    config = synced(sandbox, ledger_url, max_failures=-1, dead_letter_path="@work/dead.jsonl")
    bad = [
        schema("people", {"email": {"type": "string"}, "userId": {"type": "integer"}}, ["email"]),
        record("people", {"email": "a@example.com", "userId": 5}),
    ]
    run_target(config, bad)
    sandbox.clear_requests()
    again = run_target(config, [schema("people", PERSON_PROPS, ["email"]), state({"b": 1})])
    assert again.returncode == 0
    assert sandbox.write_counts() == {}


EVENT_PROPS = {"event_id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}}


def events(n: int) -> list[dict]:
    return [schema("events", EVENT_PROPS, ["event_id"])] + [
        record("events", {"event_id": f"e{i}", "name": "Signed up", "email": f"p{i}@example.com"}) for i in range(n)
    ]


def test_events_with_an_id_arrive_once_across_reruns(sandbox, ledger_url):
    config = synced(sandbox, ledger_url, endpoint="track_event")
    for _ in range(3):  # an inclusive bookmark resends the last ones, a full table all of them
        run = run_target(config, [*events(30), state({"b": 1})])
        assert run.returncode == 0, run.stderr
    assert len(sandbox.events()) == 30


def test_events_without_an_id_are_each_sent(sandbox, ledger_url):
    config = synced(sandbox, ledger_url, endpoint="track_event")
    messages = [schema("events", EVENT_PROPS)] + [record("events", {"name": "Clicked", "email": "a@example.com"})] * 2
    for _ in range(2):
        assert run_target(config, messages).returncode == 0
    assert len(sandbox.events()) == 4


def test_events_with_an_id_once_across_kill_9_and_resume(sandbox, tmp_path):
    ledger = str(tmp_path / "ledger.db")
    config = synced(sandbox, ledger, endpoint="track_event", max_concurrency=2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    sandbox.set_faults(latency_ms=30)
    proc = subprocess.Popen(
        [*target_command(), "--config", str(tmp_path / "config.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in events(200)))  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while len(sandbox.events()) < 50:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(sandbox.events())
    sandbox.set_faults(latency_ms=0)
    run = run_target(config, [*events(200), state({"b": 1})])  # resumed from the start: no STATE went out
    assert run.returncode == 0, run.stderr
    ids = [e["properties"]["event_id"] for e in sandbox.events()]
    assert set(ids) == {f"e{i}" for i in range(200)}
    assert len(ids) - 200 <= 2, f"{len(ids) - 200} repeated (at most the calls in flight at the kill: 2)"
    assert before >= 50


def test_a_dry_run_reads_the_ledger_and_never_writes_it(sandbox, ledger_url, tmp_path):
    assert run_target(synced(sandbox, ledger_url), people(20)).returncode == 0
    status_before = ledger_status(ledger_url, tmp_path)
    previews = tmp_path / "previews.jsonl"
    run = run_target(synced(sandbox, ledger_url, dry_run=True, preview_path=str(previews)), changed_people(20, [3, 4]))
    assert run.returncode == 0, run.stderr
    shown = [p for line in previews.read_text().splitlines() for p in (json.loads(line).get("body") or [])]
    assert sorted(p["email"] for p in shown) == ["p3@example.com", "p4@example.com"]
    assert ledger_status(ledger_url, tmp_path) == status_before
    sandbox.clear_requests()
    assert run_target(synced(sandbox, ledger_url), changed_people(20, [3, 4])).returncode == 0
    assert sum(len(r["body"]) for r in sandbox.requests(writes_only=True)) == 2


def ledger_status(ledger_url: str, tmp_path: Path) -> str:
    (tmp_path / "ledger-config.json").write_text(json.dumps({"ledger_url": ledger_url}))
    exe = str(Path(target_command()[0]).parent / "target-encharge-ledger")
    done = subprocess.run(
        [exe, "status", "--config", str(tmp_path / "ledger-config.json")], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_forget_then_the_next_run_sends_everything_again(sandbox, ledger_url, tmp_path):
    assert run_target(synced(sandbox, ledger_url), people(10)).returncode == 0
    assert "people" in ledger_status(ledger_url, tmp_path)
    exe = str(Path(target_command()[0]).parent / "target-encharge-ledger")
    subprocess.run(
        [exe, "forget", "--stream", "people", "--config", str(tmp_path / "ledger-config.json")],
        check=True,
        capture_output=True,
    )
    sandbox.clear_requests()
    assert run_target(synced(sandbox, ledger_url), people(10)).returncode == 0
    assert sum(len(r["body"]) for r in sandbox.requests(writes_only=True)) == 10


def test_replayed_dead_letters_are_delivered_after_the_data_is_fixed(sandbox, ledger_url, tmp_path):
    config = synced(sandbox, ledger_url, max_failures=-1, dead_letter_path=str(tmp_path / "dead.jsonl"))
    run_target(config, [*people(2), record("people", {"email": "bad@example.com", "score": "high"})])
    exe = str(Path(target_command()[0]).parent / "target-encharge-ledger")
    fixed = (tmp_path / "dead.jsonl").read_text().replace('"high"', "7")
    (tmp_path / "fixed.jsonl").write_text(fixed)
    replay = subprocess.run([exe, "replay", str(tmp_path / "fixed.jsonl")], capture_output=True, check=True)
    run = run_target(synced(sandbox, ledger_url, dead_letter_path=None), [replay.stdout])
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="bad@example.com")["score"] == 7


def test_another_account_starts_from_nothing(ledger_url):
    with (
        Sandbox(api_key="sandbox-api-key", write_key="sandbox-write-key", account_id=1) as one,
        Sandbox(api_key="sandbox-api-key", write_key="sandbox-write-key", account_id=2) as two,
    ):
        assert run_target(synced(one, ledger_url), people(5)).returncode == 0
        assert run_target(synced(two, ledger_url), people(5)).returncode == 0
        assert len(two.people()) == 5


@pytest.mark.parametrize("case", ["unreachable server", "wrong password", "corrupt file", "newer version"])
def test_a_bad_ledger_stops_the_run_in_one_line_before_anything_is_sent(sandbox, tmp_path, case, request):
    if case == "unreachable server":
        url = "postgresql://encharge:s3cr3t-pw@127.0.0.1:1/ledger"
    elif case == "wrong password":
        good = request.getfixturevalue("postgres_url")
        user, rest = good.split("://", 1)[1].split(":", 1)
        url = f"postgresql://{user}:s3cr3t-pw@{rest.split('@', 1)[1]}"
    elif case == "corrupt file":
        (tmp_path / "ledger.db").write_bytes(b"this is not a database" * 100)
        url = str(tmp_path / "ledger.db")
    else:
        url = str(tmp_path / "ledger.db")
        assert run_target(synced(sandbox, url), people(1)).returncode == 0
        import sqlite3

        with sqlite3.connect(url) as db:
            db.execute("update encharge_ledger_meta set value = '999' where name = 'schema_version'")
        sandbox.reset()
    run = run_target(synced(sandbox, url), people(2))
    assert run.returncode == 1
    line = [x for x in run.stderr.splitlines() if x.startswith("target-encharge: error:")][-1]
    assert "ledger_url" in line
    assert "s3cr3t-pw" not in run.stderr + run.stdout
    assert [r for r in sandbox.requests() if r["method"] in WRITES] == []


def test_deliveries_from_many_workers_share_commits_and_none_is_lost(tmp_path):
    """Several delivery workers mark their calls delivered at once: every row is written, in fewer commits."""
    import threading

    from target_encharge.ledger import Delivered, Scope, SyncLedger
    from target_encharge.sync import GroupCommit

    scope = Scope("1@sandbox", "create_or_update_person", "people")
    commits = []
    with SyncLedger.open(str(tmp_path / "ledger.db")) as ledger:

        def write(rows):
            commits.append(len(rows))
            ledger.mark_delivered(scope, rows)

        group = GroupCommit(write)
        barrier = threading.Barrier(8)

        def worker(w):
            barrier.wait()
            for i in range(50):
                group.write([Delivered(f"email:w{w}-{i}@example.com", "f")])

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(commits) == 400 and len(ledger.known(scope)) == 400
        assert len(commits) < 400  # rows that arrived during a commit went together in the next one


@pytest.mark.subprocess
def test_an_unchanged_rerun_on_sqlite_never_imports_sqlalchemy(sandbox, tmp_path):
    """A third of the command's start-up is importing SQLAlchemy: a current SQLite ledger is read and written
    through the driver, so an hourly rerun (and a dry run) does without it. The first run creates the tables
    with it."""
    config = synced(sandbox, str(tmp_path / "ledger.db"))
    first = run_target(config, people(20))
    assert first.returncode == 0, first.stderr
    sandbox.clear_requests()
    for settings in ({}, {"dry_run": True}):
        again = run_target_process({**config, **settings}, people(20), env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert again.returncode == 0, again.stderr
        imported = [
            line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")
        ]
        assert "target_encharge.ledger.store" in imported  # (the import times are there to be read)
        assert not [name for name in imported if name.split(".")[0] == "sqlalchemy"]
        assert sandbox.write_counts() == {}  # unchanged: nothing sent


def test_a_nul_in_an_identifier_neither_stops_the_run_nor_the_next(sandbox, ledger_url):
    """PostgreSQL text cannot hold a NUL character: an email that has one (a tap's bad row) is known to the ledger
    with U+FFFD in its place, on either store, so it is delivered, remembered, and unchanged the next hour."""
    messages = [schema("people", PERSON_PROPS, []), *people(3)[1:], state({"b": 1})]  # identity: the email itself
    messages[2]["record"]["email"] = "odd\u0000one@example.com"
    first = run_target(synced(sandbox, ledger_url), messages)
    assert first.returncode == 0, first.stderr
    assert summary(first, "people")["succeeded"] == 3
    sandbox.clear_requests()
    again = run_target(synced(sandbox, ledger_url), messages)
    assert again.returncode == 0, again.stderr
    assert summary(again, "people")["unchanged"] == 3
    assert sandbox.write_counts() == {}
