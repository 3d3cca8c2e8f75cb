"""Delivery as users rely on it: retries, Retry-After, failures, dead letters, ordering and STATE."""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import threading
import time
import typing as t
import urllib.parse

import pytest
import urllib3.connection
from helpers import (
    API_KEY,
    PERSON_PROPS,
    WRITE_KEY,
    people,
    record,
    run_target,
    sandbox_config,
    schema,
    state,
    target_command,
)

from target_encharge.client import Client, RateLimiter
from target_encharge.failures import FailureLimit
from target_encharge.jsonl import Lines
from target_encharge.ledger import SyncLedger
from target_encharge.outputs import Outputs
from target_encharge.redaction import Redactor
from target_encharge.request import Outcome, Request
from target_encharge.results import Results
from target_encharge.retry import RetryPolicy, parse_retry_after
from target_encharge.sync import Sync
from target_encharge.templates import encharge_templates
from target_encharge.urls import Credentials


def people_calls(sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["path"] == "/v1/people" and r["method"] == "POST"]


def test_500s_and_dropped_connections_are_retried_until_delivered(sandbox):
    sandbox.set_faults(error_rate=0.3, drop_rate=0.1)
    run = run_target(sandbox_config(sandbox, max_retries=10, max_concurrency=4, batch_records=False), people(60))
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 60
    faults = [r["fault"] for r in people_calls(sandbox)]
    assert "500" in faults, "the sandbox should have injected 500s"
    assert len(faults) > 60
    assert "Retrying POST /v1/people" in run.stderr


def test_retry_after_is_honoured(sandbox):
    sandbox.set_faults(rate_limit=1, retry_after=2)
    run = run_target(sandbox_config(sandbox, max_concurrency=1), people(3))
    assert run.returncode == 0, run.stderr
    calls = people_calls(sandbox)
    assert len(sandbox.people()) == 3
    limited = [i for i, c in enumerate(calls) if c["status"] == 429]
    assert limited, "the sandbox should have answered 429"
    for i in limited:
        # the retry_backoff of the test config is 0.01 s: only Retry-After explains a wait this long
        assert calls[i + 1]["time"] - calls[i]["time"] >= 1.8


def test_retry_after_http_date_and_backoff_policy():
    assert parse_retry_after("3") == 3.0
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(soon) <= 31
    assert parse_retry_after("nonsense") is None
    policy = RetryPolicy(max_retries=5, backoff=1.0, backoff_max=8)
    delays = [policy.get_backoff_time(n) for n in range(1, 7)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and all(d <= 8 for d in delays)
    assert policy.get_backoff_time(1, "7") == 7


def test_retries_give_up_after_max_retries_and_the_record_is_dead_lettered(sandbox):
    sandbox.set_faults(error_rate=1.0)
    run = run_target(
        sandbox_config(
            sandbox, endpoint="track_event", max_retries=2, dead_letter_path="@work/dead.jsonl", max_failures=5
        ),
        [
            schema("events", {"name": {"type": "string"}, "email": {"type": "string"}}),
            record("events", {"name": "Signed up", "email": "a@example.com"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert len([r for r in sandbox.requests() if r["path"] == "/ingest/v1"]) == 3  # one try and two retries
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["stream"] == "events" and dead["status"] == 500
    assert dead["record"] == {"name": "Signed up", "email": "a@example.com"}
    assert dead["identifiers"] == {"email": "a@example.com"}


def test_start_up_checks_are_retried_then_stop_the_run_with_the_reason(sandbox):
    sandbox.set_faults(error_rate=1.0)
    run = run_target(sandbox_config(sandbox, max_retries=1), people(1))
    assert run.returncode == 1
    assert "GET /accounts/info failed after 2 attempt(s): HTTP 500" in run.error_line
    assert people_calls(sandbox) == []


def test_a_bad_api_key_stops_the_run_naming_api_key(sandbox):
    run = run_target(sandbox_config(sandbox, api_key="not-the-key"), people(3))
    assert run.returncode == 1
    assert "api_key" in run.error_line and "401" in run.error_line
    assert people_calls(sandbox) == []
    assert "not-the-key" not in run.stderr + run.stdout


def test_a_bad_write_key_stops_the_run_naming_write_key(sandbox):
    config = sandbox_config(sandbox, endpoint="track_event", write_key="wrong-write-key")
    run = run_target(
        config,
        [
            schema("events", {"name": {"type": "string"}, "email": {"type": "string"}}),
            record("events", {"name": "Signed up", "email": "a@example.com"}),
        ],
    )
    assert run.returncode == 1
    assert "write_key" in run.error_line
    assert "wrong-write-key" not in run.stderr


def test_unknown_object_name_is_refused_before_sending_listing_the_names(sandbox):
    run = run_target(
        sandbox_config(sandbox, endpoint="create_custom_object", object_name="Company"),
        [schema("companies", {"externalId": {"type": "string"}}), record("companies", {"externalId": "1"})],
    )
    assert run.returncode == 1
    assert "'Company'" in run.error_line and "'company'" in run.error_line
    assert not [r for r in sandbox.requests() if r["path"].startswith("/v1/objects")]


def test_missing_write_key_is_refused_before_sending(sandbox):
    config = sandbox_config(sandbox, streams={"events": {"endpoint": "track_event"}})
    del config["write_key"]
    run = run_target(
        config,
        [
            schema("events", {"name": {"type": "string"}, "email": {"type": "string"}}),
            record("events", {"name": "Signed up", "email": "a@example.com"}),
        ],
    )
    assert run.returncode == 1
    assert "write_key" in run.error_line
    assert sandbox.events() == []


def test_records_missing_what_their_template_needs_are_dead_lettered_and_never_sent(sandbox):
    tag_schema = {"email": {"type": ["string", "null"]}, "tag": {"type": ["string", "null"]}}
    run = run_target(
        sandbox_config(
            sandbox,
            endpoint="add_tag",
            dead_letter_path="@work/dead.jsonl",
            max_failures=-1,
            streams={"people": {"endpoint": "create_or_update_person"}},
        ),
        [
            *people(1),
            schema("tags", tag_schema),
            record("tags", {"email": "p0@example.com"}),
            record("tags", {"tag": "orphan"}),
            record("tags", {"email": "p0@example.com", "tag": "ok"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    dead = run.file_lines("dead.jsonl")
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 2
    assert all(r.startswith("refused before sending") for r in reasons)
    assert "no tag" in reasons[0] and "no email" in reasons[1]
    tag_calls = [r for r in sandbox.requests() if r["path"] == "/v1/tags"]
    assert [c["body"] for c in tag_calls] == [{"tag": "ok", "email": "p0@example.com"}]


def test_failures_past_max_failures_stop_the_run(sandbox):
    messages = [schema("tags", {"email": {"type": "string"}, "tag": {"type": "string"}})]
    messages += [record("tags", {"email": f"ghost{i}@example.com", "tag": "x"}) for i in range(5)]
    run = run_target(
        sandbox_config(
            sandbox, endpoint="add_tag", max_failures=2, max_concurrency=1, dead_letter_path="@work/dead.jsonl"
        ),
        messages,
    )
    assert run.returncode == 1
    assert "max_failures=2" in run.error_line
    dead = run.file_lines("dead.jsonl")
    assert 3 <= len(dead) <= 5
    assert all(d["status"] == 404 for d in dead)  # Encharge does not know these people


def test_a_refused_batch_is_split_and_the_good_records_still_arrive(sandbox):
    props = {"email": {}, "firstName": {}}
    records = [record("people", {"email": f"ok{i}@example.com", "firstName": "Ok"}) for i in range(9)]
    records.insert(4, record("people", {"email": {"not": "an email"}, "firstName": "Bad"}))
    run = run_target(
        sandbox_config(sandbox, batch_records=True, batch_size=10, dead_letter_path="@work/dead.jsonl", max_failures=1),
        [schema("people", props), *records],
    )
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 9
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["record"]["firstName"] == "Bad" and dead["status"] == 400
    assert people_calls(sandbox)[0]["status"] == 400 and len(people_calls(sandbox)[0]["body"]) == 10


def test_calls_for_the_same_person_keep_input_order_under_concurrency(sandbox):
    sandbox.set_faults(error_rate=0.25, latency_ms=5)
    sandbox_seeded = [schema("people", {**PERSON_PROPS, "version": {"type": "integer"}}, ["email"])]
    tag_schema = schema("tags", {"email": {"type": "string"}, "tag": {"type": "string"}})
    messages = [*sandbox_seeded, tag_schema]
    for version in range(1, 5):
        for i in range(15):
            messages.append(record("people", {"email": f"o{i}@example.com", "version": version}))
            messages.append(record("tags", {"email": f"o{i}@example.com", "tag": f"v{version}"}))
    run = run_target(
        sandbox_config(sandbox, max_concurrency=8, max_retries=15, streams={"tags": {"endpoint": "add_tag"}}),
        messages,
    )
    assert run.returncode == 0, run.stderr
    for i in range(15):
        person = sandbox.person(email=f"o{i}@example.com")
        assert person["version"] == 4
        assert sorted(person["tags"]) == ["v1", "v2", "v3", "v4"]  # no tag arrived before its person existed
    delivered = [
        r["body"][0]["version"]
        for r in people_calls(sandbox)
        if r["status"] == 200 and r["body"][0]["email"] == "o3@example.com"
    ]
    assert delivered == [1, 2, 3, 4]


@pytest.mark.subprocess  # watches STATE come out of a live process while the sandbox holds the calls
def test_state_is_relayed_only_after_the_records_before_it_are_delivered(sandbox):
    sandbox.set_faults(latency_ms=150, error_rate=0.2)
    messages = [schema("people", PERSON_PROPS, ["email"])]
    for i in range(12):
        messages.append(record("people", {"email": f"s{i}@example.com"}))
        if i % 3 == 2:
            messages.append(state({"bookmarks": {"people": {"upto": i + 1}}}))
    config_path = sandbox_config(sandbox, max_concurrency=4, max_retries=10)
    import tempfile
    from pathlib import Path

    workdir = Path(tempfile.mkdtemp())
    (workdir / "config.json").write_text(json.dumps(config_path))
    proc = subprocess.Popen(
        [*target_command(), "--config", str(workdir / "config.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
    proc.stdin.close()
    seen = []
    for line in proc.stdout:
        upto = json.loads(line)["bookmarks"]["people"]["upto"]
        delivered = {p["email"] for p in sandbox.people()}
        assert {f"s{i}@example.com" for i in range(upto)} <= delivered, f"STATE upto={upto} ran ahead"
        seen.append(upto)
    assert proc.wait(timeout=60) == 0
    assert seen[-1] == 12
    assert seen == sorted(seen)


def test_the_end_of_run_summary_counts_each_stream(sandbox):
    sandbox.set_faults(error_rate=0.3)
    run = run_target(sandbox_config(sandbox, max_retries=10, batch_records=False), people(20))
    assert run.returncode == 0
    summary = run.stderr[run.stderr.index("Summary:") :]
    lines = summary.splitlines()
    header = next(line for line in lines if line.startswith("stream")).split()[1:]
    row = dict(
        zip(header, map(int, next(line for line in lines if line.startswith("people")).split()[1:]), strict=True)
    )
    records, calls, succeeded, failed, retried = (
        row[k] for k in ("records", "calls", "succeeded", "failed", "retried")
    )
    assert (records, calls, succeeded, failed) == (20, 20, 20, 0)
    assert retried > 0


def test_an_answer_longer_than_what_is_kept_leaves_its_keep_alive_connection_to_the_next_call(sandbox, monkeypatch):
    """A batch's answer is longer than what is kept of it: the rest is read and dropped, so the connection goes
    back to the pool (not closed and opened again for every call)."""
    connects = []
    connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", lambda self: connects.append(1) or connect(self))
    client = Client(
        Credentials(sandbox.api_url, sandbox.ingest_url, API_KEY, WRITE_KEY),
        RetryPolicy(),
        10.0,
        RateLimiter(None),
        pool_size=1,
    )
    body = json.dumps([{"email": f"p{i}@example.com", "firstName": "x" * 40} for i in range(100)]).encode()
    call = Request(
        stream="people",
        endpoint="create_or_update_person",
        method="POST",
        url=f"{sandbox.api_url}/people",
        content_type="application/json",
        headers={},
        body=body,
    )
    for _ in range(3):
        outcome = client.send(call)
        assert outcome.status == 200 and outcome.body["truncated"] is True  # longer than what is kept
    client.close()
    assert len(connects) == 1  # one connection for the three calls


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forwarding proxy, as a company's outbound proxy is: it takes the absolute URL a client sends
    it, forwards the call and its answer, and notes what it carried."""

    carried: t.ClassVar[list[tuple[str, str]]] = []

    def _forward(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        upstream.request(self.command, f"{target.path}?{target.query}" if target.query else target.path, body, headers)
        answer = upstream.getresponse()
        content = answer.read()
        self.carried.append((self.command, target.path))
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = _forward  # noqa: N815 - http.server's names

    def log_message(self, *_args: t.Any) -> None:
        pass


def test_calls_go_through_the_proxy_the_environment_names(sandbox, monkeypatch):
    """HTTP_PROXY (and the like) from the environment carry every call, the start-up check and the batches: the
    proxy settings are read once per origin, not once per call, and that must not lose them."""
    _Proxy.carried = []
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        run = run_target(sandbox_config(sandbox, batch_records=True, batch_size=2), people(5))
        proxy.shutdown()
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 5
    logged = [(r["method"], r["path"]) for r in sandbox.requests()]
    assert ("POST", "/v1/people") in logged
    assert sorted(_Proxy.carried) == sorted(logged)  # every call the sandbox saw came through the proxy


# Where each outcome settles, in-process: counts, the dead-letter file, the ledger and the STATE gate.


class Settling:
    """A run's results with a real ledger (SQLite in a temporary folder), for one stream's template."""

    def __init__(self, tmp_path, endpoint: str) -> None:
        self.template = next(
            x
            for x in encharge_templates("https://api.example.com/v1", "https://ingest.example.com/events", "Deal")
            if x.name == endpoint
        )
        self.states: list[dict] = []
        self.dead_letter_path = tmp_path / "dead.jsonl"
        outputs = Outputs(
            state=self.states.append, dead_letters=Lines(str(self.dead_letter_path), Redactor(()), "dead_letter_path")
        )
        self.results = Results(outputs, FailureLimit(-1), masked_headers=lambda _request: {})
        self.ledger = SyncLedger.open(str(tmp_path / "ledger.db"))
        self.results.sync = Sync(self.ledger, skip_unchanged=True, resync=False, writes=True)
        self.sync = self.results.sync.stream("s", self.template, (), "1@api.example.com", mode="mirror")

    def request(self, *records: dict) -> Request:
        entries = [self.results.entry("s", r, self.template.identifiers(r)) for r in records]
        sifted = self.sync.sift(entries)
        return Request.for_entries(self.template, {}, sifted.send, self.template.url({}), ())

    def answer(self, request: Request, status: int) -> None:
        self.results.on_result(request, Outcome(status, {"error": "x"} if status >= 300 else {}, None, 1, 0.0))

    def stream(self):
        return self.results.counts.streams["s"]

    def dead_letters(self) -> list[dict]:
        return [json.loads(x) for x in self.dead_letter_path.read_text().splitlines()]

    def waiting(self) -> list[str]:
        return [f.identity for f in self.sync.waiting()]

    def close(self) -> None:
        self.results.out.close()
        self.ledger.close()


@pytest.fixture
def settling(tmp_path):
    made: list[Settling] = []

    def make(endpoint: str) -> Settling:
        made.append(Settling(tmp_path, endpoint))
        return made[-1]

    yield make
    for run in made:
        run.close()


def test_a_refusal_before_sending_settles_like_a_failure_for_good(settling):
    run = settling("create_or_update_person")
    entry = run.results.entry("s", {"email": "a@x.io"}, {"email": "a@x.io"})
    run.results.add_state({"bookmark": 1})
    run.results.refuse(entry, "no tag")
    assert run.states == [{"bookmark": 1}]  # done: the STATE after it goes out
    assert (run.stream().failed, run.results.counts.failures) == (1, 1)
    assert [(d["reason"], d["status"]) for d in run.dead_letters()] == [("refused before sending: no tag", None)]
    assert run.waiting() == []  # kept in the ledger as a failure sending again cannot pass


def test_a_2xx_marks_the_ledger_and_a_second_delivery_counts_as_an_update(settling):
    run = settling("create_or_update_person")
    run.answer(run.request({"email": "a@x.io", "firstName": "A"}), 200)
    run.answer(run.request({"email": "a@x.io", "firstName": "B"}), 200)
    assert (run.stream().succeeded, run.stream().created, run.stream().updated) == (2, 1, 1)
    assert list(run.ledger.known(run.sync.scope)) == ["email:a@x.io"]
    assert not run.dead_letter_path.read_text()


def test_a_tag_whose_person_is_not_there_yet_is_tried_once_more_then_kept_for_the_next_run(settling):
    run = settling("add_tag")
    request = run.request({"email": "a@x.io", "tag": "vip"})
    run.results.add_state({"bookmark": 1})
    run.answer(request, 404)
    assert run.results.later == [request] and run.states == []  # not settled: it waits for the end of the run
    (again,) = run.results.take_later()
    run.answer(again, 404)
    assert run.states == [{"bookmark": 1}] and run.stream().failed == 1
    assert run.waiting() == ["email:a@x.io tag:vip"]  # sent again at the start of the next run


def test_a_refusal_fails_for_good_and_a_5xx_is_kept_for_the_next_run(settling):
    run = settling("create_or_update_person")
    run.answer(run.request({"email": "a@x.io"}), 422)
    run.answer(run.request({"email": "b@x.io"}), 503)
    assert run.stream().failed == 2
    assert [d["status"] for d in run.dead_letters()] == [422, 503]
    assert run.waiting() == ["email:b@x.io"]


def test_a_removal_answered_404_is_already_gone(settling):
    run = settling("create_or_update_person")
    run.answer(run.request({"email": "a@x.io"}), 200)
    assert run.sync.deleted({"email": "a@x.io"})  # the source marked it deleted: its removal is planned
    (plan,) = run.sync.removals(1.0, 2).plans
    entry = run.results.entry("s", plan.ids, plan.ids, counted=False)
    run.sync.removing(entry.seq, plan)
    removal = Request(
        stream="s",
        endpoint=run.template.name,
        method=plan.removal.method,
        url=plan.removal.url,
        content_type="application/json",
        headers={},
        body=None,
        entries=(entry,),
        removal=True,
        answers=run.template.removal_answers,
    )
    run.answer(removal, 404)
    assert (run.stream().removed, run.stream().failed) == (1, 0)
    assert run.ledger.known(run.sync.scope) == {}
