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


def association_config(sandbox, **streams) -> dict:
    return sandbox_config(
        sandbox,
        streams={
            "customers": {"endpoint": "create_or_update_person"},
            "companies": {"endpoint": "create_custom_object", "object_name": "company"},
            "customer_companies": {"endpoint": "add_association", "target_object_name": "company"},
            **streams,
        },
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
