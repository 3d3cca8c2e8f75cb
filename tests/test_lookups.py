"""The sift of a batch (issues 22 and 23): `update` asks Encharge before it updates, even what the ledger knows,
so a person erased since is never created again; lookups stay within a URL length servers take, and a record too
long for any lookup fails alone; the answers of calls in flight across a SCHEMA change are written to the
ledger. Each test failed before its fix."""

from __future__ import annotations

import json
import typing as t
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import API_KEY, PERSON_PROPS, record, run_target, sandbox_config, schema, state

from target_encharge.sandbox import Sandbox
from target_encharge.sandbox.server import MAX_URL_BYTES

WRITES = ("POST", "PUT", "PATCH", "DELETE")
OBJECT_PROPS = {"externalId": {"type": "string"}, "name": {"type": "string"}}
EVENT_PROPS = {"event_id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def config(sandbox: Sandbox, ledger_url: str, **settings: t.Any) -> dict:
    return sandbox_config(sandbox, ledger_url=ledger_url, response_output="state", **settings)


def counts(run: t.Any, stream: str) -> dict:
    return run.states[-1]["target_encharge"]["streams"].get(stream, {})


def person_records(people: t.Iterable[tuple[str, str]]) -> list[dict]:
    return [schema("people", PERSON_PROPS, ["email"]), *(record("people", {"email": e, "plan": p}) for e, p in people)]


def call(sandbox: Sandbox, method: str, path: str) -> int:
    """A call to the sandbox's REST API with its key (as another tool, or a person at Encharge's screen, makes)."""
    request = urllib.request.Request(  # noqa: S310 - the sandbox on loopback
        sandbox.api_url + path, method=method, headers={"X-Encharge-Token": API_KEY}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return answer.status


def erase(sandbox: Sandbox, email: str) -> None:
    """A GDPR erasure in Encharge: the person is deleted for good."""
    call(sandbox, "DELETE", "/people?" + urllib.parse.urlencode({"email": email, "force": "true"}))


def people_lookups(sandbox: Sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == "GET" and r["path"].endswith("/people")]


# update never creates


def test_update_never_creates_a_person_erased_in_encharge_since_the_ledger_learned_them(sandbox, ledger_url):
    upserted = run_target(
        config(sandbox, ledger_url), [*person_records([("ann@example.com", "free"), ("bob@example.com", "free")])]
    )
    assert upserted.returncode == 0, upserted.stderr
    erase(sandbox, "ann@example.com")
    assert [p["email"] for p in sandbox.people()] == ["bob@example.com"]

    changed = person_records([("ann@example.com", "pro"), ("bob@example.com", "pro")])
    run = run_target(config(sandbox, ledger_url, sync_mode="update"), [*changed, state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert [(p["email"], p["plan"]) for p in sandbox.people()] == [("bob@example.com", "pro")]  # nobody created
    assert counts(run, "people")["skipped"] == 1
    assert counts(run, "people")["succeeded"] == 1

    # forgotten in the ledger: the next run asks again, and finds her once she is back (a new sign-up)
    sandbox.clear_requests()
    sandbox.seed(people=[{"email": "ann@example.com", "plan": "free"}])
    again = run_target(config(sandbox, ledger_url, sync_mode="update"), [*changed, state({"b": 2})])
    assert again.returncode == 0, again.stderr
    assert any("ann@example.com" in json.dumps(r["query"]) for r in people_lookups(sandbox))
    assert sandbox.person(email="ann@example.com")["plan"] == "pro"


def test_update_never_creates_a_custom_object_deleted_in_encharge_since(sandbox, ledger_url):
    settings = {"endpoint": "create_custom_object", "object_name": "company"}
    companies = [
        schema("companies", OBJECT_PROPS),
        *(record("companies", {"externalId": i, "name": "Old"}) for i in "ab"),
    ]
    assert run_target(config(sandbox, ledger_url, **settings), companies).returncode == 0
    call(sandbox, "DELETE", "/objects/company/externalId/a")

    changed = [
        schema("companies", OBJECT_PROPS),
        *(record("companies", {"externalId": i, "name": "New"}) for i in "ab"),
    ]
    run = run_target(config(sandbox, ledger_url, sync_mode="update", **settings), [*changed, state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert {o["externalId"]: o["name"] for o in sandbox.objects("company")} == {"b": "New"}
    assert counts(run, "companies")["skipped"] == 1


# long identities


def test_the_sandbox_answers_414_for_a_url_longer_than_real_servers_take(sandbox):
    with pytest.raises(urllib.error.HTTPError) as refused:
        call(sandbox, "GET", "/people?people[0][email]=" + "a" * MAX_URL_BYTES)
    assert refused.value.code == 414
    assert call(sandbox, "GET", "/people?people[0][email]=" + "a" * 100) == 200


def test_lookups_of_long_emails_are_split_so_each_url_stays_within_the_limit(sandbox, ledger_url):
    emails = [f"{'x' * 200}.{i}@example.com" for i in range(50)]  # 50 in one URL: about 12 KB
    sandbox.seed(people=[{"email": e, "plan": "free"} for e in emails])
    run = run_target(config(sandbox, ledger_url, sync_mode="update"), [*person_records((e, "pro") for e in emails)])
    assert run.returncode == 0, run.stderr
    assert {p["plan"] for p in sandbox.people()} == {"pro"}
    lookups = people_lookups(sandbox)
    assert len(lookups) > 1
    for lookup in lookups:
        target = urllib.parse.urlsplit(sandbox.api_url).path + "/people?" + urllib.parse.urlencode(lookup["query"])
        assert len(target) <= MAX_URL_BYTES


@pytest.mark.parametrize("mode", ["update", "create"])
def test_a_70_kb_email_fails_alone_with_its_reason_and_the_rest_is_delivered(sandbox, ledger_url, mode):
    long_email = "l" * 70_000 + "@example.com"
    sandbox.seed(people=[{"email": "known@example.com", "plan": "free"}])
    batch = [("known@example.com", "pro"), (long_email, "pro"), ("new@example.com", "pro")]
    settings = {"sync_mode": mode, "max_failures": -1, "dead_letter_path": "@work/dead.jsonl"}
    for _ in range(2):  # a rerun does not stop at the same record either
        run = run_target(config(sandbox, ledger_url, **settings), [*person_records(batch), state({"b": 1})])
        assert run.returncode == 0, run.stderr
        assert run.states[-1]["b"] == 1
        dead = run.file_lines("dead.jsonl")
        assert [d["record"]["email"] for d in dead] == [long_email]
        assert "too long to ask Encharge" in dead[0]["reason"]
        assert counts(run, "people")["failed"] == 1
    plans = {p["email"]: p["plan"] for p in sandbox.people()}
    if mode == "update":
        assert plans == {"known@example.com": "pro"}
    else:
        assert plans == {"known@example.com": "free", "new@example.com": "pro"}


# a SCHEMA change with calls in flight


def test_events_in_flight_across_a_schema_change_are_recorded_and_never_sent_twice(sandbox, ledger_url):
    sandbox.set_faults(latency_ms=300)  # the first SCHEMA's calls are still in flight when the second comes
    wider = {**EVENT_PROPS, "plan": {"type": ["string", "null"]}}

    def event(i: int) -> dict:
        return record("events", {"event_id": f"e{i}", "name": "Signed up", "email": f"p{i}@example.com"})

    messages = [
        schema("events", EVENT_PROPS, ["event_id"]),
        *(event(i) for i in range(4)),
        schema("events", wider, ["event_id"]),  # a new sink, and a new sync of the stream
        *(event(i) for i in range(4, 8)),
        state({"b": 1}),
    ]
    settings = {"endpoint": "track_event", "max_concurrency": 8}
    first = run_target(config(sandbox, ledger_url, **settings), messages)
    assert first.returncode == 0, first.stderr
    sandbox.set_faults(latency_ms=0)
    second = run_target(config(sandbox, ledger_url, **settings), messages)
    assert second.returncode == 0, second.stderr
    sent = sorted(e["properties"]["event_id"] for e in sandbox.events())
    assert sent == [f"e{i}" for i in range(8)]
    assert counts(second, "events")["unchanged"] == 8


def test_update_finds_every_person_of_a_full_lookup_whatever_the_size_of_the_answer(sandbox, ledger_url):
    emails = [f"person{i}@example.com" for i in range(120)]  # 50 people's answer is far longer than a kept body
    sandbox.seed(people=[{"email": e, "plan": "free", "firstName": "A" * 100} for e in emails])
    run = run_target(
        config(sandbox, ledger_url, sync_mode="update"), [*person_records((e, "pro") for e in emails), state({"b": 1})]
    )
    assert run.returncode == 0, run.stderr
    assert {p["plan"] for p in sandbox.people()} == {"pro"}
    assert counts(run, "people").get("skipped", 0) == 0
