"""Operating it hourly (issue 25): the run history in the ledger (`runs`), one record explained or forgotten
(`explain`, `forget --stream S VALUE`), a baseline that sends nothing, the failure-share alert, the run's report
and its signed notification (received by a loopback server, and one that times out), tags that wait for their
person without a failed call, and the capabilities `--about` declares.

The history runs on SQLite and on a real PostgreSQL server (tests/postgres.py starts one)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers import API_KEY, PERSON_PROPS, people, record, run_target, sandbox_config, schema, state, target_command

from target_encharge.ledger import commands

TAG_PROPS = {"email": {"type": "string"}, "tag": {"type": "string"}}
BAD_PEOPLE_PROPS = {"email": {"type": "string"}, "userId": {"type": "integer"}}  # Encharge refuses a number


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def ledger(ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`target-encharge-ledger ARGS --config` a config naming ``ledger_url``: exit code, stdout, stderr."""
    config = tmp_path / "ledger-config.json"
    config.write_text(json.dumps({"ledger_url": ledger_url}))
    capsys.readouterr()
    code = commands.main([*args, "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def runs(ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> list[dict]:
    code, out, err = ledger(ledger_url, tmp_path, capsys, "runs", "--json")
    assert code == 0, err
    return json.loads(out)


def bad_person(email: str) -> list[dict]:
    return [schema("people", BAD_PEOPLE_PROPS, ["email"]), record("people", {"email": email, "userId": 5})]


def started(sandbox: t.Any, config: dict, tmp_path: Path, messages: list[dict]) -> subprocess.Popen:
    """The command in a process of its own, its input left open after ``messages``, once it has sent some."""
    before = len(sandbox.people())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "batch_records": False}))  # each record sent as it comes
    proc = subprocess.Popen(
        [*target_command(), "--config", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while len(sandbox.people()) <= before:
        assert time.monotonic() < deadline, "the run sent nothing"
        time.sleep(0.05)
    return proc


# the run history


def test_runs_lists_each_run_newest_first_with_how_it_ended(sandbox, ledger_url, tmp_path, capsys):
    config = sandbox_config(sandbox, ledger_url=ledger_url, batch_records=False)
    ok = run_target(config, [*people(5), state({"b": 1})])
    assert ok.returncode == 0, ok.stderr
    failed = run_target(config, bad_person("bad@example.com"))
    assert failed.returncode == 1
    stopped = started(sandbox, config, tmp_path, people(3, start=10))
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(60) == 128 + signal.SIGTERM
    killed = started(sandbox, config, tmp_path, people(3, start=20))
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(60)
    dry = run_target({**config, "dry_run": True}, people(5))  # a dry run writes nothing: no history row
    assert dry.returncode == 0, dry.stderr

    history = runs(ledger_url, tmp_path, capsys)
    assert [r["status"] for r in history] == ["running", "stopped", "failed", "succeeded"]
    running, stop, fail, success = history
    assert running["ended_at"] is None and running["exit_code"] is None  # killed with SIGKILL: shown as running
    assert stop["exit_code"] == 128 + signal.SIGTERM and "SIGTERM" in (stop["reason"] or "")
    assert fail["exit_code"] == 1 and "max_failures" in fail["reason"]
    assert fail["streams"]["people"]["failed"] == 1
    assert success["exit_code"] == 0 and success["reason"] is None
    assert success["streams"]["people"]["created"] == 5 and success["records_read"] == 5
    assert success["started_at"] < success["ended_at"] <= fail["started_at"]
    assert len({r["run_id"] for r in history}) == 4
    assert len({r["settings_fingerprint"] for r in history}) == 1  # the same settings
    assert API_KEY not in json.dumps(history)

    code, table, _ = ledger(ledger_url, tmp_path, capsys, "runs", "--limit", "2")
    assert code == 0
    lines = table.splitlines()
    assert lines[2].split()[:1] == ["run"] and len(lines) == 5  # title, blank, header, two runs
    assert "running" in lines[3] and "stopped" in lines[4]


def test_runs_on_a_ledger_with_no_runs_says_so(tmp_path, capsys):
    code, out, _ = ledger(str(tmp_path / "none.db"), tmp_path, capsys, "runs")
    assert code == 0 and "no runs recorded yet" in out
    code, out, _ = ledger(str(tmp_path / "none.db"), tmp_path, capsys, "runs", "--json")
    assert code == 0 and json.loads(out) == []


# one record explained, or forgotten


def test_explain_a_delivered_record_names_the_run_that_delivered_it(sandbox, ledger_url, tmp_path, capsys):
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    assert run_target(config, [*people(3), state({"b": 1})]).returncode == 0
    assert run_target(config, [*people(3), state({"b": 2})]).returncode == 0  # unchanged: delivers nothing
    first = runs(ledger_url, tmp_path, capsys)[-1]
    code, out, err = ledger(ledger_url, tmp_path, capsys, "explain", "--stream", "people", "p1@example.com")
    assert code == 0, err
    assert 'identity: key:["p1@example.com"]' in out  # the stream's key property, as the tap sent it
    assert f"by run {first['run_id']} (succeeded" in out  # the first run, not the unchanged rerun
    assert "unchanged since" in out and "failures waiting: none" in out


def test_explain_a_record_refused_for_its_content_shows_the_failure_and_its_attempts(
    sandbox, ledger_url, tmp_path, capsys
):
    config = sandbox_config(sandbox, ledger_url=ledger_url, max_failures=-1)
    run_target(config, bad_person("bad@example.com"))
    run_target(config, bad_person("bad@example.com"))
    code, out, err = ledger(ledger_url, tmp_path, capsys, "explain", "--stream", "people", "bad@example.com")
    assert code == 0, err
    assert "delivered: never" in out
    assert "failure waiting (waits for the source to change it): HTTP 400" in out or "failure waiting" in out
    assert "2 attempt(s)" in out


def test_explain_a_tag_waiting_for_its_person_and_forget_one_record(sandbox, sqlite_ledger, tmp_path, capsys):
    config = sandbox_config(sandbox, ledger_url=sqlite_ledger, endpoint="add_tag", max_failures=-1)
    tags = [schema("tags", TAG_PROPS), record("tags", {"email": "nobody@example.com", "tag": "vip"})]
    assert run_target(config, tags).returncode == 0
    code, out, err = ledger(sqlite_ledger, tmp_path, capsys, "explain", "--stream", "tags", "nobody@example.com", "vip")
    assert code == 0, err
    assert "failure waiting (sent again when its stream next comes): HTTP 404" in out
    code, out, _ = ledger(sqlite_ledger, tmp_path, capsys, "forget", "--stream", "tags", "nobody@example.com", "vip")
    assert code == 0 and "Forgot 1 entry" in out
    code, _, err = ledger(sqlite_ledger, tmp_path, capsys, "explain", "--stream", "tags", "nobody@example.com", "vip")
    assert code == 1 and "knows no record" in err


def test_forget_one_record_and_the_next_run_sends_it_alone(sandbox, ledger_url, tmp_path, capsys):
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    assert run_target(config, people(5)).returncode == 0
    code, out, err = ledger(ledger_url, tmp_path, capsys, "forget", "--stream", "people", "p2@example.com")
    assert code == 0, err
    sandbox.clear_requests()
    assert run_target(config, people(5)).returncode == 0
    sent = [p["email"] for r in sandbox.requests(writes_only=True) for p in r["body"]]
    assert sent == ["p2@example.com"]


def test_explain_a_record_mirror_removed_or_never_seen_says_the_ledger_does_not_know_it(
    sandbox, sqlite_ledger, tmp_path, capsys
):
    mirror = sandbox_config(sandbox, ledger_url=sqlite_ledger, sync_mode="mirror", max_delete_share=0.5)
    activate = {"type": "ACTIVATE_VERSION", "stream": "people", "version": 1}
    assert run_target(mirror, [*people(3), activate]).returncode == 0
    assert run_target(mirror, [*people(2), activate]).returncode == 0  # p2 left the source: archived
    assert sandbox.person(email="p2@example.com")["archived"] is True
    code, out, err = ledger(sqlite_ledger, tmp_path, capsys, "explain", "--stream", "people", "p2@example.com")
    assert code == 1 and out == ""
    assert "knows no record 'p2@example.com' of stream 'people'" in err and "removed by mirror" in err
    code, _, err = ledger(sqlite_ledger, tmp_path, capsys, "explain", "--stream", "people", "ghost@example.com")
    assert code == 1 and "knows no record" in err


# baseline


def test_a_baseline_fills_the_ledger_sends_nothing_and_releases_state(sandbox, ledger_url, tmp_path, capsys):
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    base = run_target({**config, "baseline": True}, [*people(10), state({"b": 1})])
    assert base.returncode == 0, base.stderr
    assert base.states == [{"b": 1}]
    assert sandbox.requests(writes_only=True) == [] and sandbox.people() == []
    changed = people(10)
    changed[4]["record"]["plan"] = "enterprise"
    assert run_target(config, changed).returncode == 0
    sent = [p["email"] for r in sandbox.requests(writes_only=True) for p in r["body"]]
    assert sent == ["p3@example.com"]  # only what changed since the baseline
    assert [r["status"] for r in runs(ledger_url, tmp_path, capsys)] == ["succeeded", "succeeded"]


# the failure-share alert


def test_past_max_failure_share_the_run_exits_1_after_delivering_the_rest_and_its_state(sandbox, sqlite_ledger):
    config = sandbox_config(sandbox, ledger_url=sqlite_ledger, max_failures=-1, max_failure_share=0.2)
    messages = [schema("people", {**PERSON_PROPS, "userId": {"type": ["integer", "string", "null"]}}, ["email"])]
    messages += [record("people", {"email": f"ok{i}@example.com"}) for i in range(7)]
    messages += [record("people", {"email": f"bad{i}@example.com", "userId": i}) for i in range(3)]
    run = run_target(config, [*messages, state({"b": 1})])
    assert run.returncode == 1
    assert "stream 'people': 3 of 10 records failed (30%), more than max_failure_share=0.2 allows" in run.error_line
    assert len(sandbox.people()) == 7
    assert run.states == [{"b": 1}]
    within = run_target({**config, "max_failure_share": 0.3}, [*messages, state({"b": 2})])
    assert within.returncode == 0, within.stderr


# the report and its notification


class Receiver(http.server.ThreadingHTTPServer):
    """A loopback server that keeps what is POSTed to it (after ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.received = delay, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook?token=abc"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = t.cast("Receiver", self.server)
        time.sleep(server.delay)
        server.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: t.Any) -> None:
        pass


def test_the_report_says_what_the_run_did_and_names_failures_by_their_identifiers(sandbox, sqlite_ledger, tmp_path):
    path = tmp_path / "report.json"
    config = sandbox_config(sandbox, ledger_url=sqlite_ledger, max_failures=-1, report_path=str(path))
    messages = [schema("people", {**PERSON_PROPS, "userId": {"type": ["integer", "string", "null"]}}, ["email"])]
    messages += [record("people", {"email": f"ok{i}@example.com"}) for i in range(4)]
    messages += [record("people", {"email": f"bad{i}@example.com", "userId": i}) for i in range(12)]
    run = run_target(config, messages)
    assert run.returncode == 0, run.stderr
    document = json.loads(path.read_text())
    assert document["status"] == "succeeded" and document["exit_code"] == 0
    assert document["streams"]["people"]["records"] == 16
    assert document["streams"]["people"]["created"] == 4 and document["streams"]["people"]["failed"] == 12
    [failure] = document["failures"]
    assert failure["stream"] == "people" and failure["count"] == 12 and "400" in failure["reason"]
    assert len(failure["examples"]) == 10 and {"email": "bad0@example.com", "userId": "0"} in failure["examples"]
    assert API_KEY not in path.read_text()


def test_a_signed_notification_reaches_a_loopback_server(sandbox, sqlite_ledger):
    receiver = Receiver()
    secret = "a-notification-secret"
    config = sandbox_config(
        sandbox, ledger_url=sqlite_ledger, notify_url=receiver.url, notify_secret=secret, notify_on="always"
    )
    try:
        run = run_target(config, people(3))
    finally:
        receiver.shutdown()
    assert run.returncode == 0, run.stderr
    [(headers, body)] = receiver.received
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Target-Encharge-Signature"], expected)
    document = json.loads(body)
    assert document["status"] == "succeeded" and document["streams"]["people"]["created"] == 3
    assert secret not in run.stderr and secret not in body.decode() and API_KEY not in body.decode()
    assert "token=abc" not in run.stderr  # the URL's query is never shown


def test_notify_on_failure_tells_only_failed_runs_and_a_timeout_never_fails_the_run(sandbox, sqlite_ledger):
    slow = Receiver(delay=3)
    config = sandbox_config(sandbox, ledger_url=sqlite_ledger, notify_url=slow.url, request_timeout=1)
    try:
        quiet = run_target(config, people(2))  # succeeded: notify_on failure (the default) says nothing
        started_at = time.monotonic()
        failed = run_target({**config, "max_failures": 0}, bad_person("bad@example.com"))
        seconds = time.monotonic() - started_at
    finally:
        slow.shutdown()
    assert quiet.returncode == 0 and "notify_url" not in quiet.stderr
    assert failed.returncode == 1 and "max_failures" in failed.error_line  # the run's own reason, not the hook's
    assert "Could not send the run report to notify_url" in failed.stderr and "ReadTimeout" in failed.stderr
    assert seconds < 10


# tags wait for their person


def test_tags_before_their_people_wait_without_a_failed_call(sandbox, sqlite_ledger):
    config = sandbox_config(
        sandbox,
        ledger_url=sqlite_ledger,
        streams={"customer_tags": {"endpoint": "add_tag"}},
    )
    tags = [schema("customer_tags", TAG_PROPS)]  # alphabetical, as tap-postgres sends them: tags first
    tags += [record("customer_tags", {"email": f"p{i}@example.com", "tag": "vip"}) for i in range(5)]
    run = run_target(config, [*tags, state({"b": 1}), *people(5, stream="customers"), state({"b": 2})])
    assert run.returncode == 0, run.stderr
    tag_calls = [r for r in sandbox.requests() if r["path"].endswith("/tags")]
    assert [r["status"] for r in tag_calls] == [201] * 5  # no 404 first
    assert all("vip" in p["tags"] for p in sandbox.people())
    assert run.states[-1] == {"b": 2}
    # the next run: the ledger knows them, a new tag goes at once
    sandbox.clear_requests()
    again = [schema("customer_tags", TAG_PROPS), record("customer_tags", {"email": "p1@example.com", "tag": "new"})]
    assert run_target(config, again).returncode == 0
    assert [r["status"] for r in sandbox.requests() if r["path"].endswith("/tags")] == [201]


def test_a_tag_removed_after_a_tag_that_waits_for_its_person_is_removed_after_it(sandbox, sqlite_ledger):
    config = sandbox_config(
        sandbox,
        ledger_url=sqlite_ledger,
        streams={"customer_tags": {"endpoint": "add_tag"}, "untags": {"endpoint": "remove_tag"}},
    )
    added = [schema("customer_tags", TAG_PROPS), record("customer_tags", {"email": "p0@example.com", "tag": "vip"})]
    removed = [schema("untags", TAG_PROPS), record("untags", {"email": "p0@example.com", "tag": "vip"})]
    run = run_target(config, [*added, *people(1, stream="customers"), *removed])
    assert run.returncode == 0, run.stderr
    tag_calls = [(r["method"], r["status"]) for r in sandbox.requests() if r["path"].endswith("/tags")]
    assert tag_calls == [("POST", 201), ("DELETE", 204)]  # the add waited for its person, the removal behind it
    assert sandbox.person(email="p0@example.com")["tags"] == []


# what the target declares


@pytest.mark.subprocess  # --about, as Meltano runs it
def test_about_declares_activate_version_and_batch_and_their_settings():
    done = subprocess.run(
        [*target_command(), "--about", "--format", "json"], capture_output=True, text=True, check=True
    )
    about = json.loads(done.stdout)
    assert {"activate-version", "batch", "about", "stream-maps", "validate-records"} <= set(about["capabilities"])
    settings = about["settings"]["properties"]
    assert settings["process_activate_version_messages"]["default"] is True
    assert "batch_config" not in settings  # a BATCH message names its own files and encoding
    assert settings["notify_secret"]["secret"] is True


def test_a_full_table_sync_logs_no_warning_about_sdc_metadata(sandbox, sqlite_ledger):
    activate = {"type": "ACTIVATE_VERSION", "stream": "people", "version": 1}
    run = run_target(sandbox_config(sandbox, ledger_url=sqlite_ledger), [*people(2), activate])
    assert run.returncode == 0, run.stderr
    assert "_sdc_deleted_at" not in run.stderr
