"""Sync modes and deletes (issue 14): update-only and create-only per template, mirror on a full-table sync
(ACTIVATE_VERSION) and on a log-based one (`_sdc_deleted_at`), the guard, tags written elsewhere left alone, dry
runs that show their removals, and the modes a template cannot take refused at start-up."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def activate(stream: str, version: int = 1) -> dict:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def config(sandbox: t.Any, ledger: str, **settings: t.Any) -> dict:
    return sandbox_config(sandbox, ledger_url=ledger, response_output="state", **settings)


def counts(run: t.Any, stream: str) -> dict:
    return run.states[-1]["target_encharge"]["streams"].get(stream, {})


def writes(sandbox: t.Any) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] in WRITES]


def person_records(emails: t.Iterable[str], stream: str = "people", plan: str = "pro") -> list[dict]:
    return [schema(stream, PERSON_PROPS, ["email"]), *(record(stream, {"email": e, "plan": plan}) for e in emails)]


# update and create


def test_update_changes_only_people_already_in_encharge(sandbox, ledger):
    sandbox.seed(people=[{"email": "known1@example.com", "plan": "free"}, {"email": "known2@example.com"}])
    emails = ["known1@example.com", "new1@example.com", "KNOWN2@example.com", "new2@example.com"]
    run = run_target(config(sandbox, ledger, sync_mode="update"), [*person_records(emails), state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert sorted(p["email"].lower() for p in sandbox.people()) == ["known1@example.com", "known2@example.com"]
    assert sandbox.person(email="known1@example.com")["plan"] == "pro"
    assert counts(run, "people")["skipped"] == 2
    assert counts(run, "people")["succeeded"] == 2


def test_create_only_adds_people_not_yet_in_encharge_and_leaves_the_others_alone(sandbox, ledger):
    sandbox.seed(people=[{"email": "known@example.com", "plan": "free"}])
    emails = ["known@example.com", "new1@example.com", "new2@example.com"]
    run = run_target(config(sandbox, ledger, sync_mode="create"), [*person_records(emails), state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="known@example.com")["plan"] == "free"  # untouched
    assert sandbox.person(email="new1@example.com")["plan"] == "pro"
    assert counts(run, "people")["skipped"] == 1 and counts(run, "people")["created"] == 2
    sandbox.clear_requests()  # the next hour: everyone exists now, nothing is asked or sent
    again = run_target(config(sandbox, ledger, sync_mode="create"), person_records([*emails, "new3@example.com"]))
    assert again.returncode == 0, again.stderr
    assert [json.loads(json.dumps(r["body"])) for r in writes(sandbox)] == [
        [{"email": "new3@example.com", "plan": "pro"}]
    ]


OBJECT_PROPS = {"externalId": {"type": "string"}, "name": {"type": "string"}}


def objects(ids: t.Iterable[str], name: str = "New") -> list[dict]:
    return [schema("companies", OBJECT_PROPS), *(record("companies", {"externalId": i, "name": name}) for i in ids)]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("update", {"c1": "New"}),
        ("create", {"c1": "Old", "c2": "New"}),
    ],
)
def test_update_and_create_for_custom_objects(sandbox, ledger, mode, expected):
    sandbox.seed(objects={"company": [{"externalId": "c1", "name": "Old"}]})
    run = run_target(
        config(sandbox, ledger, endpoint="create_custom_object", object_name="company", sync_mode=mode),
        [*objects(["c1", "c2"]), state({"b": 1})],
    )
    assert run.returncode == 0, run.stderr
    assert {o["externalId"]: o["name"] for o in sandbox.objects("company")} == expected
    assert counts(run, "companies")["skipped"] == 1


# mirror: full-table syncs


def test_mirror_archives_people_who_left_the_source_at_activate_version(sandbox, ledger):
    emails = [f"p{i}@example.com" for i in range(10)]
    mirror = config(sandbox, ledger, sync_mode="mirror")
    records = person_records(emails)  # as tap-mysql does: SCHEMA, ACTIVATE_VERSION, the records, ACTIVATE_VERSION
    first = run_target(mirror, [records[0], activate("people"), *records[1:], activate("people"), state({"b": 1})])
    assert first.returncode == 0, first.stderr
    assert "removed" not in counts(first, "people")  # the first ACTIVATE_VERSION came before any record
    again = run_target(
        mirror, [activate("people", 2), *person_records(emails[:9]), activate("people", 2), state({"b": 2})]
    )  # an ACTIVATE_VERSION before its SCHEMA is told and ignored
    assert again.returncode == 0, again.stderr
    assert sandbox.person(email="p9@example.com")["archived"] is True
    assert not any(p.get("archived") for p in sandbox.people() if p["email"] != "p9@example.com")
    assert counts(again, "people")["removed"] == 1
    assert again.states[-1]["b"] == 2
    sandbox.clear_requests()  # gone from the ledger too: nothing more to remove
    third = run_target(mirror, [*person_records(emails[:9]), activate("people", 3)])
    assert third.returncode == 0, third.stderr
    assert writes(sandbox) == []


def test_mirror_with_delete_action_delete_deletes_for_gdpr(sandbox, ledger):
    mirror = config(sandbox, ledger, sync_mode="mirror", delete_action="delete", max_delete_share=0.5)
    assert run_target(mirror, [*person_records(["a@example.com", "b@example.com"]), activate("people")]).returncode == 0
    run = run_target(mirror, [*person_records(["a@example.com"]), activate("people")])
    assert run.returncode == 0, run.stderr
    assert [p["email"] for p in sandbox.deleted_people()] == ["b@example.com"]
    assert [r for r in writes(sandbox) if r["method"] == "DELETE"][0]["query"].get("force") == "true"


def test_mirror_deletes_custom_objects_by_external_id(sandbox, ledger):
    mirror = config(
        sandbox,
        ledger,
        endpoint="create_custom_object",
        object_name="company",
        sync_mode="mirror",
        max_delete_share=0.5,
    )
    assert run_target(mirror, [*objects(["c1", "c2", "c3"]), activate("companies")]).returncode == 0
    run = run_target(mirror, [*objects(["c1", "c2"]), activate("companies")])
    assert run.returncode == 0, run.stderr
    assert sorted(o["externalId"] for o in sandbox.objects("company")) == ["c1", "c2"]


def test_an_empty_snapshot_removes_nothing(sandbox, ledger):
    mirror = config(sandbox, ledger, sync_mode="mirror")
    assert run_target(mirror, [*person_records(["a@example.com"]), activate("people")]).returncode == 0
    run = run_target(mirror, [schema("people", PERSON_PROPS, ["email"]), activate("people"), state({"b": 1})])
    assert run.returncode == 0, run.stderr
    assert not sandbox.person(email="a@example.com").get("archived")


def test_the_guard_refuses_every_removal_when_too_many_would_go(sandbox, ledger):
    emails = [f"p{i}@example.com" for i in range(10)]
    mirror = config(sandbox, ledger, sync_mode="mirror")
    assert run_target(mirror, [*person_records(emails), activate("people")]).returncode == 0
    sandbox.clear_requests()
    changed = person_records(emails[:5], plan="enterprise")
    run = run_target(mirror, [*changed, activate("people"), state({"b": 2})])
    assert run.returncode == 1
    line = [x for x in run.stderr.splitlines() if x.startswith("target-encharge: error:")][-1]
    assert "people" in line and "5" in line and "50%" in line and "max_delete_share" in line
    assert [r for r in writes(sandbox) if r["method"] == "DELETE"] == []
    assert sandbox.person(email="p0@example.com")["plan"] == "enterprise"  # everything else was delivered
    assert run.states[-1]["b"] == 2  # and its STATE went out
    allowed = run_target({**mirror, "max_delete_share": 0.6}, [*changed, activate("people")])
    assert allowed.returncode == 0, allowed.stderr
    assert sum(1 for p in sandbox.people() if p.get("archived")) == 5


# mirror: log-based syncs


CUSTOMER_PROPS = {
    "customer_id": {"type": "integer"},
    "email": {"type": ["string", "null"]},
    "plan": {"type": ["string", "null"]},
    "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
}


def customers(rows: list[dict]) -> list[dict]:
    return [schema("customers", CUSTOMER_PROPS, ["customer_id"]), *(record("customers", r) for r in rows)]


def test_a_record_marked_deleted_carrying_only_its_key_archives_its_person(sandbox, ledger):
    mirror = config(sandbox, ledger, sync_mode="mirror", max_delete_share=0.5)  # 1 of 3: past the default guard
    rows = [{"customer_id": i, "email": f"c{i}@example.com", "plan": "pro"} for i in range(3)]
    assert run_target(mirror, customers(rows)).returncode == 0
    run = run_target(
        mirror, [*customers([{"customer_id": 1, "_sdc_deleted_at": "2024-05-01T00:00:00Z"}]), state({"lsn": 9})]
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="c1@example.com")["archived"] is True
    assert not sandbox.person(email="c0@example.com").get("archived")
    assert counts(run, "customers")["removed"] == 1


def test_other_modes_never_upsert_a_record_marked_deleted(sandbox, ledger):
    run = run_target(
        config(sandbox, ledger),
        [
            *customers(
                [
                    {"customer_id": 1, "email": "alive@example.com"},
                    {"customer_id": 2, "email": "gone@example.com", "_sdc_deleted_at": "2024-05-01T00:00:00Z"},
                ]
            ),
            state({"b": 1}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert [p["email"] for p in sandbox.people()] == ["alive@example.com"]
    assert counts(run, "customers")["skipped"] == 1


# tags


TAG_PROPS = {"email": {"type": "string"}, "tag": {"type": "string"}}


def tags(rows: list[tuple[str, str]]) -> list[dict]:
    return [schema("tags", TAG_PROPS), *(record("tags", {"email": e, "tag": t}) for e, t in rows)]


def test_mirror_removes_only_the_tags_it_added(sandbox, ledger):
    sandbox.seed(
        people=[{"email": f"p{i}@example.com"} for i in range(3)],
        tags=[{"tag": "from-a-flow", "email": "p1@example.com"}],
    )
    mirror = config(sandbox, ledger, endpoint="add_tag", sync_mode="mirror", max_delete_share=0.5)
    rows = [("p0@example.com", "vip"), ("p1@example.com", "vip"), ("p2@example.com", "trial")]
    assert run_target(mirror, [*tags(rows), activate("tags")]).returncode == 0
    assert sorted(sandbox.person(email="p1@example.com")["tags"]) == ["from-a-flow", "vip"]
    run = run_target(mirror, [*tags([rows[0], rows[2]]), activate("tags")])  # p1's vip left the source
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="p1@example.com")["tags"] == ["from-a-flow"]  # the flow's tag stays
    assert sandbox.person(email="p0@example.com")["tags"] == ["vip"]


# dry run


def test_a_dry_run_shows_each_removal_sends_nothing_and_a_real_run_makes_them(sandbox, ledger, tmp_path):
    mirror = config(sandbox, ledger, sync_mode="mirror", max_delete_share=0.5)
    emails = ["a@example.com", "b@example.com", "c@example.com"]
    assert run_target(mirror, [*person_records(emails), activate("people")]).returncode == 0
    before = Path(ledger).read_bytes()
    sandbox.clear_requests()
    previews = tmp_path / "previews.jsonl"
    dry = run_target(
        {**mirror, "dry_run": True, "preview_path": str(previews)}, [*person_records(emails[:2]), activate("people")]
    )
    assert dry.returncode == 0, dry.stderr
    removals = [p for p in map(json.loads, previews.read_text().splitlines()) if p["method"] == "DELETE"]
    assert len(removals) == 1 and "c%40example.com" in removals[0]["url"] and "ACTIVATE_VERSION" in removals[0]["why"]
    assert sandbox.requests() == []
    assert Path(ledger).read_bytes() == before
    real = run_target(mirror, [*person_records(emails[:2]), activate("people")])
    assert real.returncode == 0, real.stderr
    assert [r["query"] for r in writes(sandbox) if r["method"] == "DELETE"] == [{"people[0][email]": "c@example.com"}]


# modes a template cannot take


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [
        ("remove_tag", "mirror"),
        ("add_tag", "update"),
        ("track_event", "create"),
        ("manual", "mirror"),
    ],
)
def test_a_mode_the_template_cannot_take_is_refused_at_start_naming_the_stream(sandbox, ledger, endpoint, mode):
    streams = {"things": {"endpoint": endpoint, "sync_mode": mode, "url": "/people"}}
    run = run_target(config(sandbox, ledger, streams=streams), [*people(1), schema("things", TAG_PROPS)])
    assert run.returncode == 1
    line = [x for x in run.stderr.splitlines() if x.startswith("target-encharge: error:")][-1]
    assert "things" in line and mode in line
    assert writes(sandbox) == []
