"""Issue 24 against the sandbox: associations (add, remove, mirror, waiting for their people), unsubscribe, never
re-subscribing, the field contract, and `id` kept for Encharge's own."""

from __future__ import annotations

from helpers import record, run_target, sandbox_config, schema, state

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
