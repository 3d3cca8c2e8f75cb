"""Issue 24 against the sandbox: associations (add, remove, mirror, waiting for their people), unsubscribe, never
re-subscribing, the field contract, and `id` kept for Encharge's own."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import API_KEY
from helpers import record, run_target, sandbox_config, schema, state

from target_encharge import check
from target_encharge.ledger import SyncLedger

REST = {"X-Encharge-Token": API_KEY}
COMPANY_PROPS = {"externalId": {"type": "string"}, "name": {"type": ["string", "null"]}}
LINK_PROPS = {
    "email": {"type": "string"},
    "targetExternalId": {"type": "string"},
}
PERSON = {"email": {"type": "string"}, "firstName": {"type": ["string", "null"]}}


def links(sandbox) -> set[tuple[str, str]]:
    """(person email, company externalId) of every link in the account."""
    people = {p["id"]: p.get("email") for p in sandbox.people()}
    companies = {o["id"]: o["externalId"] for o in sandbox.objects("company")}
    return {(people[a["fromId"]], companies[a["toId"]]) for a in sandbox.associations()}


def association_config(sandbox, streams: dict | None = None, **settings) -> dict:
    return sandbox_config(
        sandbox,
        streams={
            "customers": {"endpoint": "create_or_update_person"},
            "companies": {"endpoint": "create_custom_object", "object_name": "company"},
            "customer_companies": {"endpoint": "add_association", "target_object_name": "company"},
            **(streams or {}),
        },
        **settings,
    )


def customers_and_companies(order: str = "links first") -> list[dict]:
    people = [
        schema("customers", PERSON, ["email"]),
        record("customers", {"email": "ann@example.com", "firstName": "Ann"}),
        record("customers", {"email": "bo@example.com", "firstName": "Bo"}),
    ]
    companies = [
        schema("companies", COMPANY_PROPS, ["externalId"]),
        record("companies", {"externalId": "acme", "name": "Acme"}),
        record("companies", {"externalId": "globex", "name": "Globex"}),
    ]
    associations = [
        schema("customer_companies", LINK_PROPS, ["email", "targetExternalId"]),
        record("customer_companies", {"email": "Ann@example.com", "targetExternalId": "acme"}),
        record("customer_companies", {"email": "bo@example.com", "targetExternalId": "acme"}),
        record("customer_companies", {"email": "bo@example.com", "targetExternalId": "globex"}),
    ]
    if order == "links first":
        return [*associations, *companies, *people, state({"done": True})]
    return [*people, *companies, *associations, state({"done": True})]


def test_associations_that_come_before_their_people_and_companies_wait_for_them(sandbox):
    run = run_target(association_config(sandbox), customers_and_companies("links first"))
    assert run.returncode == 0, run.stderr
    assert links(sandbox) == {("ann@example.com", "acme"), ("bo@example.com", "acme"), ("bo@example.com", "globex")}
    assert run.states == [{"done": True}]
    posts = [r for r in sandbox.requests() if "/associations/default/company/" in r["path"]]
    assert len(posts) == 3 and all(r["status"] == 201 for r in posts)
    # every association call went after the people and companies were created
    last_upsert = max(i for i, r in enumerate(sandbox.requests()) if r["path"] in ("/v1/people", "/v1/objects/company"))
    first_link = min(i for i, r in enumerate(sandbox.requests()) if "/associations/" in r["path"])
    assert first_link > last_upsert
    # the ids came from what the upserts answered: nothing was looked up
    assert not [r for r in sandbox.requests() if r["method"] == "GET" and "/people" in r["path"]]
    assert not [r for r in sandbox.requests() if "/externalId/" in r["path"]]


def test_a_second_run_finds_the_ids_in_the_ledger_and_removes_links_by_the_association_id(sandbox):
    config = association_config(sandbox, ledger_url="@work/ledger.db")
    first = run_target(config, customers_and_companies("people first"))
    assert first.returncode == 0, first.stderr
    ledger = first.workdir / "ledger.db"
    before = len(sandbox.requests())
    removal = {
        **config,
        "ledger_url": str(ledger),
        "streams": {"gone": {"endpoint": "remove_association", "target_object_name": "company"}},
    }
    second = run_target(
        removal,
        [
            schema("gone", LINK_PROPS),
            record("gone", {"email": "bo@example.com", "targetExternalId": "globex"}),
        ],
    )
    assert second.returncode == 0, second.stderr
    assert links(sandbox) == {("ann@example.com", "acme"), ("bo@example.com", "acme")}
    calls = sandbox.requests()[before:]
    association = sandbox.associations()[0]["associationId"]
    assert [c["method"] for c in calls if c["path"].startswith("/v1/objects/person/")] == ["DELETE"]
    assert any(f"/associations/{association}/" in c["path"] for c in calls)
    assert not [c for c in calls if c["method"] == "GET" and c["path"] in ("/v1/people",)]  # ids from the ledger


def test_an_association_whose_person_never_comes_fails_and_waits_for_the_next_run(sandbox):
    sandbox.seed(objects={"company": [{"externalId": "acme"}]})
    run = run_target(
        association_config(sandbox, ledger_url="@work/ledger.db"),
        [
            schema("customer_companies", LINK_PROPS),
            record("customer_companies", {"email": "nobody@example.com", "targetExternalId": "acme"}),
            record("customer_companies", {"targetExternalId": "acme"}),
        ],
    )
    assert run.returncode != 0
    dead = run.file_lines("target-encharge-dead-letters.jsonl")
    reasons = sorted(d["reason"] for d in dead)
    assert "no such person" in reasons[0] or "no such person" in reasons[1]
    assert any("no email, userId or id" in r for r in reasons)
    assert sandbox.associations() == []


def test_mirror_removes_the_associations_it_made_that_left_the_source_and_no_other(sandbox):
    config = association_config(
        sandbox,
        streams={
            "customer_companies": {
                "endpoint": "add_association",
                "target_object_name": "company",
                "sync_mode": "mirror",
            }
        },
        ledger_url="@work/ledger.db",
    )
    config["max_delete_share"] = 0.5
    first = run_target(
        config,
        [
            *customers_and_companies("people first")[:-1],
            {"type": "ACTIVATE_VERSION", "stream": "customer_companies", "version": 1},
        ],
    )
    assert first.returncode == 0, first.stderr
    # a link made in Encharge by someone else stays
    sandbox.seed(
        people=[{"email": "cy@example.com"}],
        associations=[
            {
                "objectName": "person",
                "email": "cy@example.com",
                "targetObjectName": "company",
                "targetExternalId": "acme",
            }
        ],
    )
    config["ledger_url"] = str(first.workdir / "ledger.db")
    second = run_target(
        config,
        [
            schema("customer_companies", LINK_PROPS, ["email", "targetExternalId"]),
            {"type": "ACTIVATE_VERSION", "stream": "customer_companies", "version": 2},
            record("customer_companies", {"email": "Ann@example.com", "targetExternalId": "acme"}),
            record("customer_companies", {"email": "bo@example.com", "targetExternalId": "acme"}),
            {"type": "ACTIVATE_VERSION", "stream": "customer_companies", "version": 2},
        ],
    )
    assert second.returncode == 0, second.stderr
    assert links(sandbox) == {("ann@example.com", "acme"), ("bo@example.com", "acme"), ("cy@example.com", "acme")}
    (removed,) = [r for r in sandbox.requests() if r["method"] == "DELETE"]
    assert removed["status"] == 204 and "/v1/objects/person/" in removed["path"]


def test_unsubscribe_person_posts_one_person_per_call(sandbox):
    sandbox.seed(people=[{"email": "ann@example.com"}, {"email": "bo@example.com", "userId": "u-2"}])
    run = run_target(
        sandbox_config(sandbox, endpoint="unsubscribe_person"),
        [
            schema("optouts", {"email": {"type": ["string", "null"]}, "userId": {"type": ["string", "null"]}}),
            record("optouts", {"email": "ann@example.com"}),
            record("optouts", {"userId": "u-2"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    calls = [r for r in sandbox.requests() if r["path"] == "/v1/people/unsubscribe"]
    assert [(c["method"], c["status"]) for c in calls] == [("POST", 204), ("POST", 204)]
    assert all(p["unsubscribed"] is True for p in sandbox.people())


# --- never re-subscribe ---------------------------------------------------------------------------------------


def test_a_sync_never_sends_unsubscribed_false_unless_allowed(sandbox):
    sandbox.seed(people=[{"email": "ann@example.com"}, {"email": "bo@example.com"}])
    props = {"email": {"type": "string"}, "unsubscribed": {"type": ["boolean", "string", "null"]}}
    messages = [
        schema("customers", props, ["email"]),
        record("customers", {"email": "ann@example.com", "unsubscribed": False}),
        record("customers", {"email": "bo@example.com", "unsubscribed": "false"}),
        record("customers", {"email": "cy@example.com", "unsubscribed": True}),
    ]
    for email in ("ann@example.com", "bo@example.com"):
        requests.post(f"{sandbox.api_url}/people/unsubscribe?email={email}", headers=REST, timeout=10)
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode == 0, run.stderr
    assert all(p["unsubscribed"] is True for p in sandbox.people())
    (body,) = [r["body"] for r in sandbox.requests() if r["path"] == "/v1/people"]
    assert [("unsubscribed" in p) for p in body] == [False, False, True]
    assert run.stderr.count("carried unsubscribed: false") == 1 and "2 person record(s)" in run.stderr
    allowed = run_target(sandbox_config(sandbox, allow_resubscribe=True), messages)
    assert allowed.returncode == 0, allowed.stderr
    assert sandbox.person(email="ann@example.com")["unsubscribed"] is False
    assert "carried unsubscribed" not in allowed.stderr


# --- the field contract ---------------------------------------------------------------------------------------

FIELD_PROPS = {
    "email": {"type": "string"},
    "firstName": {"type": ["string", "null"]},
    "seats": {"type": ["integer", "null"]},
    "mrr": {"type": ["number", "null"]},
    "trial": {"type": ["boolean", "null"]},
    "renewsOn": {"type": ["string", "null"], "format": "date"},
    "createdAt": {"type": ["string", "null"], "format": "date-time"},
}


def test_fields_the_account_lacks_are_named_once_and_encharge_may_drop_them(sandbox):
    sandbox.set_field_policy(drop_unknown_fields=True)
    run = run_target(
        sandbox_config(sandbox, batch_size=1),
        [
            schema("customers", FIELD_PROPS, ["email"]),
            record("customers", {"email": "ann@example.com", "seats": 3, "createdAt": "2024-01-02T03:04:05Z"}),
            record("customers", {"email": "bo@example.com", "seats": 4, "mrr": 9.5}),
        ],
    )
    assert run.returncode == 0, run.stderr
    named = [line for line in run.stderr.splitlines() if "lack" in line]
    assert len(named) == 1 and "seats, mrr, trial, renewsOn" in named[0] and "may drop" in named[0]
    assert run.stderr.count("createdAt is read-only") == 1
    bodies = [r["body"][0] for r in sandbox.requests() if r["path"] == "/v1/people"]
    assert all("createdAt" not in b for b in bodies)  # read-only: left out
    assert "seats" not in sandbox.person(email="ann@example.com")  # the account dropped it


def test_create_missing_fields_creates_them_typed_from_the_schema_first(sandbox):
    sandbox.set_field_policy(drop_unknown_fields=True)
    run = run_target(
        sandbox_config(sandbox, create_missing_fields=True),
        [
            schema("customers", FIELD_PROPS, ["email"]),
            record("customers", {"email": "ann@example.com", "seats": 3, "mrr": 9.5, "renewsOn": "2025-01-01"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    created = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1/fields"]
    assert len(created) == 1
    assert created[0]["body"] == [
        {"name": "seats", "type": "integer"},
        {"name": "mrr", "type": "number"},
        {"name": "trial", "type": "boolean"},
        {"name": "renewsOn", "type": "string", "format": "date"},
    ]
    assert sandbox.requests().index(created[0]) < [r["path"] for r in sandbox.requests()].index("/v1/people")
    ann = sandbox.person(email="ann@example.com")
    assert (ann["seats"], ann["renewsOn"]) == (3, "2025-01-01")
    assert "lack" not in run.stderr and "created the person field 'seats' (integer)" in run.stderr


def test_custom_object_fields_are_created_in_their_schema(sandbox):
    props = {"externalId": {"type": "string"}, "name": {"type": "string"}, "employees": {"type": "integer"}}
    run = run_target(
        sandbox_config(sandbox, endpoint="create_custom_object", object_name="company", create_missing_fields=True),
        [schema("companies", props, ["externalId"]), record("companies", {"externalId": "acme", "employees": 5})],
    )
    assert run.returncode == 0, run.stderr
    (created,) = [r for r in sandbox.requests() if r["path"] == "/v1/schemas/company/fields"]
    assert created["body"] == [{"name": "employees", "type": "integer"}]


def test_values_that_cannot_be_read_as_their_fields_type_are_refused_and_those_that_can_are_sent_as_it(sandbox):
    sandbox.seed(
        fields=[
            {"name": "seats", "type": "integer"},
            {"name": "mrr", "type": "number"},
            {"name": "trial", "type": "boolean"},
            {"name": "plan", "type": "string", "enum": ["free", "pro"], "allowNewEnumValues": False},
            {"name": "note", "type": "string"},
        ]
    )
    props = {name: {} for name in ("email", "seats", "mrr", "trial", "plan", "note")}
    run = run_target(
        sandbox_config(sandbox, max_failures=-1, batch_records=False),
        [
            schema("customers", props, ["email"]),
            record(
                "customers", {"email": "ok@example.com", "seats": "3", "mrr": "9.50", "trial": "true", "plan": "pro"}
            ),
            record("customers", {"email": "a@example.com", "seats": "abc"}),
            record("customers", {"email": "b@example.com", "mrr": "lots"}),
            record("customers", {"email": "c@example.com", "plan": "enterprise"}),
            record("customers", {"email": "d@example.com", "note": "x" * 5001}),
            record("customers", {"email": "e@example.com", "seats": 2.5}),
        ],
    )
    assert run.returncode == 0, run.stderr
    ok = sandbox.person(email="ok@example.com")
    assert (ok["seats"], ok["trial"], ok["plan"]) == (3, True, "pro") and float(ok["mrr"]) == 9.5
    reasons = {d["identifiers"]["email"]: d["reason"] for d in run.file_lines("target-encharge-dead-letters.jsonl")}
    assert set(reasons) == {"a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"}
    assert "field 'seats'" in reasons["a@example.com"] and "not an integer" in reasons["a@example.com"]
    assert "field 'mrr'" in reasons["b@example.com"]
    assert "field 'plan'" in reasons["c@example.com"] and "free, pro" in reasons["c@example.com"]
    assert "5,000 characters" in reasons["d@example.com"]
    assert "field 'seats'" in reasons["e@example.com"]
    assert all(reason.startswith("refused before sending") for reason in reasons.values())
    assert [p["email"] for p in sandbox.people()] == ["ok@example.com"]


# --- `id` is Encharge's ---------------------------------------------------------------------------------------


def test_a_number_in_id_is_refused_naming_user_id_and_the_stream_map_that_moves_it(sandbox):
    props = {"id": {"type": "integer"}, "email": {"type": "string"}}
    messages = [schema("customers", props), record("customers", {"id": 42, "email": "ann@example.com"})]
    run = run_target(sandbox_config(sandbox), messages)
    assert run.returncode != 0
    (dead,) = run.file_lines("target-encharge-dead-letters.jsonl")
    assert "its id is a number (42)" in dead["reason"] and "userId" in dead["reason"]
    assert '"userId": "str(id)", "id": "__NULL__"' in dead["reason"]
    assert sandbox.people() == []
    # the stream map it names works
    mapped = run_target(
        sandbox_config(sandbox, stream_maps={"customers": {"userId": "str(id)", "id": "__NULL__"}}), messages
    )
    assert mapped.returncode == 0, mapped.stderr
    assert sandbox.person(email="ann@example.com")["userId"] == "42"


def test_the_check_command_lists_per_stream_the_fields_the_account_lacks_and_the_read_only_ones(
    sandbox, tmp_path, capsys
):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(sandbox_config(sandbox, streams={"customers": {"endpoint": "create_or_update_person"}}))
    )
    messages = tmp_path / "messages.jsonl"
    messages.write_text(json.dumps(schema("customers", FIELD_PROPS, ["email"])) + "\n")
    assert check.main(["--config", str(config), "--catalog", str(messages)]) == 0
    err = capsys.readouterr().err
    assert "note: stream customers: fields the account's person fields lack: seats, mrr, trial, renewsOn" in err
    assert "note: stream customers: read-only in Encharge, left out: createdAt" in err
    assert sandbox.person_fields() and not [r for r in sandbox.requests() if r["method"] != "GET"]  # wrote nothing
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "streams": [
                    {
                        "tap_stream_id": "customers",
                        "stream": "customers",
                        "schema": {"properties": {"email": {}, "plan": {}}},
                    }
                ]
            }
        )
    )
    assert check.main(["--config", str(config), "--catalog", str(catalog)]) == 0
    assert "lack: plan (Encharge may drop them)" in capsys.readouterr().err


def test_the_readmes_stream_map_turns_a_customer_companies_table_into_associations(sandbox):
    """The README's example: tap-postgres's `public-customer_companies` (customer_id, company_id, role), keyed by
    both ids, becomes userId + targetExternalId for add_association."""
    sandbox.seed(people=[{"email": "ann@example.com", "userId": "7"}], objects={"company": [{"externalId": "12"}]})
    stream = "public-customer_companies"
    config = sandbox_config(
        sandbox,
        streams={stream: {"endpoint": "add_association", "target_object_name": "company"}},
        stream_maps={
            stream: {
                "userId": "str(customer_id)",
                "targetExternalId": "str(company_id)",
                "customer_id": "__NULL__",
                "company_id": "__NULL__",
                "role": "__NULL__",
                "__key_properties__": ["userId", "targetExternalId"],
            }
        },
    )
    props = {"customer_id": {"type": "integer"}, "company_id": {"type": "integer"}, "role": {"type": "string"}}
    run = run_target(
        config,
        [
            schema(stream, props, ["customer_id", "company_id"]),
            record(stream, {"customer_id": 7, "company_id": 12, "role": "admin"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert links(sandbox) == {("ann@example.com", "12")}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_ledger_keeps_encharge_ids_per_account_object_and_identity(store, tmp_path, request):
    url = str(tmp_path / "ledger.db") if store == "sqlite" else request.getfixturevalue("postgres_url")
    with SyncLedger.open(url) as ledger:
        ledger.remember_encharge_ids("1@api", "person", {"email:ann@example.com": "p-1", "userId:u-2": "p-2"})
        ledger.remember_encharge_ids("1@api", "company", {"externalId:acme": "5"})
        ledger.remember_encharge_ids("1@api", "person", {"email:ann@example.com": "p-9"})  # Encharge's latest word
        ledger.remember_encharge_ids("2@api", "person", {"email:ann@example.com": "other"})
    with SyncLedger.open(url, read_only=True) as ledger:
        assert ledger.encharge_ids("1@api", "person", ["email:ann@example.com", "userId:u-2", "email:x"]) == {
            "email:ann@example.com": "p-9",
            "userId:u-2": "p-2",
        }
        assert ledger.encharge_ids("1@api", "company", ["externalId:acme", "email:ann@example.com"]) == {
            "externalId:acme": "5"
        }
        assert ledger.encharge_ids("2@api", "person", ["email:ann@example.com"]) == {"email:ann@example.com": "other"}
    with SyncLedger.open(url) as ledger:
        ledger.forget_encharge_ids("1@api", "person", ["email:ann@example.com"])
        assert ledger.encharge_ids("1@api", "person", ["email:ann@example.com", "userId:u-2"]) == {"userId:u-2": "p-2"}
        assert ledger.encharge_ids("2@api", "person", ["email:ann@example.com"]) == {"email:ann@example.com": "other"}


def test_associations_between_custom_objects_by_association_id_and_target_id(sandbox):
    sandbox.seed(objects={"company": [{"externalId": "acme"}]})
    (acme,) = sandbox.objects("company")
    defined = requests.post(
        f"{sandbox.api_url}/schemas/associations",
        json={"type": "1:M", "fromObject": "company", "toObject": "subscription", "name": "Plan"},
        headers=REST,
        timeout=10,
    ).json()["association"]
    config = sandbox_config(
        sandbox,
        streams={
            "subscriptions": {"endpoint": "create_custom_object", "object_name": "subscription"},
            "plans": {
                "endpoint": "add_association",
                "object_name": "subscription",
                "target_object_name": "company",
                "association_id": defined["id"],
            },
        },
    )
    run = run_target(
        config,
        [
            schema("plans", {"externalId": {"type": "string"}, "targetId": {"type": "integer"}}),
            record("plans", {"externalId": "s-1", "targetId": acme["id"]}),
            schema("subscriptions", {"externalId": {"type": "string"}}, ["externalId"]),
            record("subscriptions", {"externalId": "s-1"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (link,) = sandbox.associations()
    (sub,) = sandbox.objects("subscription")
    assert link == {
        "associationId": defined["id"],
        "fromObject": "company",
        "fromId": acme["id"],
        "toObject": "subscription",
        "toId": sub["id"],
    }
    assert [r["path"] for r in sandbox.requests() if "/associations/" in r["path"]] == [
        f"/v1/objects/subscription/{sub['id']}/associations/{defined['id']}/{acme['id']}"
    ]


def test_a_dry_run_shows_an_association_by_its_sides_and_sends_nothing(sandbox):
    run = run_target(
        {**association_config(sandbox), "dry_run": True, "preview_path": "@work/preview.jsonl"},
        customers_and_companies("people first"),
    )
    assert run.returncode == 0, run.stderr
    previews = [p for p in run.file_lines("preview.jsonl") if "/associations/" in p.get("url", "")]
    assert len(previews) == 3
    assert any("%7Bemail%3Aann%40example.com%7D" in p["url"] or "{email:ann@example.com}" in p["url"] for p in previews)
    assert sandbox.requests() == [] and sandbox.associations() == []


def test_a_field_in_exclude_attributes_is_never_named_missing(sandbox):
    run = run_target(
        sandbox_config(sandbox, exclude_attributes=["seats", "mrr", "trial", "renewsOn", "createdAt"]),
        [schema("customers", FIELD_PROPS, ["email"]), record("customers", {"email": "ann@example.com", "seats": 3})],
    )
    assert run.returncode == 0, run.stderr
    assert "lack" not in run.stderr and "read-only" not in run.stderr


def test_an_id_that_encharge_no_longer_knows_is_forgotten_and_asked_for_again(sandbox):
    sandbox.seed(
        people=[{"email": "ann@example.com"}], objects={"company": [{"externalId": "acme"}, {"externalId": "globex"}]}
    )
    config = association_config(sandbox, ledger_url="@work/ledger.db", max_failures=-1)
    link = [schema("customer_companies", LINK_PROPS, ["email", "targetExternalId"])]
    first = run_target(
        config, [*link, record("customer_companies", {"email": "ann@example.com", "targetExternalId": "acme"})]
    )
    assert first.returncode == 0, first.stderr
    config["ledger_url"] = str(first.workdir / "ledger.db")
    requests.delete(f"{sandbox.api_url}/people?email=ann@example.com&force=true", headers=REST, timeout=10)
    sandbox.seed(people=[{"email": "ann@example.com"}])  # the same person, a new Encharge id
    second = run_target(
        config, [*link, record("customer_companies", {"email": "ann@example.com", "targetExternalId": "globex"})]
    )
    assert second.returncode == 0, second.stderr
    assert links(sandbox) == set()  # the old id: 404, kept for the next run
    third = run_target(config, link)  # the failure is sent again, the id asked for afresh
    assert third.returncode == 0, third.stderr
    assert links(sandbox) == {("ann@example.com", "globex")}
