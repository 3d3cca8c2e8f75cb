"""Each Encharge template: what the sandbox receives for the records a user sends, and routing by stream."""

from __future__ import annotations

import typing as t

import pytest
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state

from target_encharge.errors import ConfigError
from target_encharge.request import Outcome, verdict
from target_encharge.run import Run
from target_encharge.settings import resolve
from target_encharge.sinks import SinkRun
from target_encharge.templates import Kind, Lookup, Template, encharge_templates, template_for
from target_encharge.verdicts import Verdict


def sent(sandbox, method: str, path: str) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == method and r["path"] == path]


def test_people_are_upserted_with_iso_dates_and_plain_numbers(sandbox):
    run = run_target(
        sandbox_config(sandbox, batch_records=False),  # one call per record (people are batched by default)
        [  # (createdAt is read-only in Encharge: left out, so another date field)
            schema(
                "people", {**PERSON_PROPS, "signedUpAt": {"type": ["string", "null"], "format": "date-time"}}, ["email"]
            ),
            record(
                "people",
                {
                    "email": "ann@example.com",
                    "firstName": "Ann",
                    "score": 1.25,
                    "signedUpAt": "2024-03-01T10:00:00+00:00",
                },
            ),
            record("people", {"email": "ann@example.com", "lastName": "Lee"}),
            state({"bookmarks": {"people": {"replication_key_value": "2024-03-01"}}}),
        ],
    )
    assert run.returncode == 0, run.stderr
    ann = sandbox.person(email="ann@example.com")
    assert ann["firstName"] == "Ann" and ann["lastName"] == "Lee"
    calls = sent(sandbox, "POST", "/v1/people")
    assert len(calls) == 2
    first = calls[0]["body"]
    assert isinstance(first, list) and len(first) == 1
    assert first[0]["score"] == 1.25  # a JSON number, not a string
    assert first[0]["signedUpAt"].startswith("2024-03-01T10:00:00")
    assert run.states == [{"bookmarks": {"people": {"replication_key_value": "2024-03-01"}}}]


def test_people_in_batches_share_calls(sandbox):
    run = run_target(sandbox_config(sandbox, batch_records=True, batch_size=10), people(25))
    assert run.returncode == 0, run.stderr
    assert sorted(len(c["body"]) for c in sent(sandbox, "POST", "/v1/people")) == [5, 10, 10]
    assert len(sandbox.people()) == 25


def test_add_and_remove_tag_send_one_comma_separated_tag(sandbox):
    sandbox_people = people(2)
    tag_schema = {"email": {"type": "string"}, "tag": {"type": ["string", "array"], "items": {"type": "string"}}}
    run = run_target(
        sandbox_config(sandbox, streams={"tags": {"endpoint": "add_tag"}, "untags": {"endpoint": "remove_tag"}}),
        [
            *sandbox_people,
            schema("tags", tag_schema),
            record("tags", {"email": "p0@example.com", "tag": ["vip", "beta"]}),
            record("tags", {"email": "p1@example.com", "tag": "trial"}),
            schema("untags", tag_schema),
            record("untags", {"email": "p0@example.com", "tag": "beta"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    bodies = sorted((c["body"] for c in sent(sandbox, "POST", "/v1/tags")), key=lambda b: b["email"])
    assert bodies == [{"tag": "vip,beta", "email": "p0@example.com"}, {"tag": "trial", "email": "p1@example.com"}]
    assert [c["status"] for c in sent(sandbox, "POST", "/v1/tags")] == [201, 201]
    assert sent(sandbox, "DELETE", "/v1/tags")[0]["status"] == 204
    assert sorted(sandbox.person(email="p0@example.com")["tags"]) == ["vip"]
    assert sandbox.person(email="p1@example.com")["tags"] == ["trial"]


def test_custom_objects_go_to_their_schema(sandbox):
    props = {"externalId": {"type": "string"}, "name": {"type": "string"}, "employees": {"type": "integer"}}
    run = run_target(
        sandbox_config(sandbox, endpoint="create_custom_object", object_name="company", batch_records=True),
        [schema("companies", props, ["externalId"])]
        + [record("companies", {"externalId": f"c{i}", "name": f"Co {i}", "employees": i}) for i in range(3)],
    )
    assert run.returncode == 0, run.stderr
    calls = sent(sandbox, "POST", "/v1/objects/company")
    assert len(calls) == 1 and len(calls[0]["body"]) == 3
    assert sorted(o["externalId"] for o in sandbox.objects("company")) == ["c0", "c1", "c2"]


def test_events_go_to_ingest_with_user_and_properties(sandbox):
    props = {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "plan": {"type": "string"},
        "amount": {"type": "number"},
        "firstName": {"type": "string"},
    }
    run = run_target(
        sandbox_config(sandbox, endpoint="track_event"),
        [
            schema("events", props),
            record("events", {"name": "Upgraded plan", "email": "ev@example.com", "plan": "pro", "amount": 49.9}),
            record("events", {"name": "identify", "email": "ev@example.com", "firstName": "Eve"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert [e["name"] for e in sandbox.events()] == ["Upgraded plan"]  # identify only updates the person
    sent_events = {r["body"]["name"]: r["body"] for r in sandbox.requests() if r["path"] == "/ingest/v1"}
    assert sent_events["Upgraded plan"] == {
        "name": "Upgraded plan",
        "user": {"email": "ev@example.com"},
        "properties": {"plan": "pro", "amount": 49.9},
    }
    assert sent_events["identify"] == {"name": "identify", "user": {"email": "ev@example.com", "firstName": "Eve"}}
    assert sandbox.person(email="ev@example.com")["firstName"] == "Eve"
    ingest = [r for r in sandbox.requests() if r["path"] == "/ingest/v1"]
    assert ingest and all(r["auth"] == "write_key" for r in ingest)


def test_streams_not_listed_go_to_the_default_endpoint(sandbox):
    tag_schema = {"email": {"type": "string"}, "tag": {"type": "string"}}
    run = run_target(
        sandbox_config(sandbox, endpoint="add_tag", streams={"users": {"endpoint": "create_or_update_person"}}),
        [
            schema("users", PERSON_PROPS, ["email"]),
            record("users", {"email": "r@example.com"}),
            schema("anything", tag_schema),
            record("anything", {"email": "r@example.com", "tag": "routed"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="r@example.com")["tags"] == ["routed"]
    assert len(sent(sandbox, "POST", "/v1/people")) == 1


def test_excluded_attributes_are_never_sent(sandbox):
    run = run_target(
        sandbox_config(sandbox, exclude_attributes=["plan"], streams={"people": {"exclude_attributes": ["score"]}}),
        people(2),
    )
    assert run.returncode == 0, run.stderr
    for call in sent(sandbox, "POST", "/v1/people"):
        assert "score" not in call["body"][0]
        assert "plan" in call["body"][0]  # the stream's own list overrides the top-level one


# The template table, in-process: every template says, as data, what the run asks of it.


def _every_template() -> list[Template]:
    manual = template_for(
        resolve({"streams": {"s": {"endpoint": "manual", "url": "/objects/Deal/{id}", "method": "PATCH"}}}, "s"),
        "https://api.example.com/v1",
        "https://ingest.example.com/events",
    )
    return [*encharge_templates("https://api.example.com/v1", "https://ingest.example.com/events", "Deal"), manual]


def test_every_template_declares_what_the_run_asks_of_it():
    templates = _every_template()
    assert sorted(x.name for x in templates) == [
        "add_association",
        "add_tag",
        "create_custom_object",
        "create_or_update_person",
        "manual",
        "remove_association",
        "remove_tag",
        "track_event",
        "unsubscribe_person",
    ]
    for template in templates:
        assert template.kind in t.get_args(Kind), template.name
        assert template.lookup in (*t.get_args(Lookup), None), template.name
        assert template.destination, template.name  # the ledger's scope
        # update and create ask Encharge what exists; mirror removes: each only where the template can
        assert (template.lookup is not None) == ("update" in template.modes), template.name
        assert (template.removal is not None) == ("mirror" in template.modes), template.name
        assert (template.object_schema is not None) == (template.kind == "custom object"), template.name
        assert all(v.refused for v in (*template.answers.values(), *template.removal_answers.values()))
        assert (Verdict.EXISTS in template.answers.values()) == (template.upsert is not None), template.name
        if template.upsert is not None:  # an update refused with 409 fails; it is never sent again as itself
            assert Verdict.EXISTS not in template.upsert.answers.values()
            assert template.upsert.method == "PUT" and not template.upsert.batchable
    by_name = {x.name: x for x in templates}
    assert {n for n, x in by_name.items() if x.people} == {
        "create_or_update_person",
        "add_tag",
        "remove_tag",
        "track_event",
        "unsubscribe_person",
    }  # (the associations here are the Deal object's; a person's, by default, are people too)
    assert [n for n, x in by_name.items() if x.events] == ["track_event"]
    assert {n: dict(x.answers) for n, x in by_name.items() if x.answers} == {
        "add_tag": {404: Verdict.LATER},
        "remove_tag": {404: Verdict.LATER},
        "create_custom_object": {409: Verdict.EXISTS},
        "unsubscribe_person": {404: Verdict.LATER},
        "add_association": {404: Verdict.LATER},
        "remove_association": {404: Verdict.LATER},
    }
    assert all(dict(x.removal_answers) == {404: Verdict.ABSENT} for x in templates)


def test_each_template_knows_its_records_by_its_own_identity_and_orders_by_person_or_object():
    by_name = {x.name: x for x in _every_template()}
    person = {"email": "Ann@Example.com", "userId": "u1", "tag": ["vip", "", "new"], "externalId": "d1", "id": 7}
    assert by_name["create_or_update_person"].identity(person) == "email:ann@example.com"
    assert by_name["add_tag"].identity(person) == "email:ann@example.com tag:vip,new"
    assert by_name["remove_tag"].identity({"userId": "u1", "tag": "vip"}) == "userId:u1 tag:vip"
    assert by_name["create_custom_object"].identity(person) == "externalId:d1"
    assert by_name["track_event"].identity({"name": "signup", "email": "a@x.io"}) is None  # sent every time
    assert by_name["manual"].identity(person) is None
    assert by_name["track_event"].identity({"name": "signup", "id": 3}, ["id"]) == "key:[3]"  # key properties

    ids = {"email": "Ann@Example.com", "userId": "u1", "externalId": "d1", "id": 7}
    assert by_name["create_or_update_person"].ordering_keys(ids, "u") == ("email:ann@example.com", "userId:u1", "id:7")
    assert by_name["create_custom_object"].ordering_keys(ids, "u") == ("object externalId:d1", "object id:7")
    url = "https://api.example.com/v1/objects/Deal/7"  # a manual URL with a placeholder: its own key too
    assert by_name["manual"].ordering_keys(ids, url) == (
        "email:ann@example.com",
        "userId:u1",
        "id:7",
        "object externalId:d1",
        "object id:7",
        url,
    )


def test_a_template_without_a_setting_it_requires_is_refused_naming_it():
    settings = resolve({"streams": {"deals": {"endpoint": "create_custom_object"}}}, "deals")
    with pytest.raises(ConfigError, match="endpoint 'create_custom_object' needs object_name"):
        template_for(settings, "https://api.example.com/v1", "https://ingest.example.com/events")


def test_what_a_status_means_is_read_once_with_the_template_s_answers():
    def answer(status: int | None, failure: str | None = None) -> Outcome:
        return Outcome(status, None, None if status and status < 300 else "no", 1, 0.0, failure=failure)

    by_name = {x.name: x for x in _every_template()}
    tag, objects = by_name["add_tag"], by_name["create_custom_object"]
    assert verdict(answer(404), tag.answers) is Verdict.LATER
    assert verdict(answer(404), tag.removal_answers) is Verdict.ABSENT
    assert verdict(answer(404)) is Verdict.REFUSED
    assert verdict(answer(409), objects.answers) is Verdict.EXISTS
    assert verdict(answer(409), objects.upsert.answers) is Verdict.REFUSED
    assert verdict(answer(200), tag.answers) is Verdict.DELIVERED
    # a template's answers give meaning to refusals only: a 5xx, a 429 or a refused key read as ever
    assert verdict(answer(503), {503: Verdict.ABSENT}) is Verdict.RETRY
    assert verdict(answer(429), {429: Verdict.LATER}) is Verdict.RETRY
    assert verdict(answer(401), {401: Verdict.ABSENT}) is Verdict.AUTH_FAILURE
    assert verdict(answer(None, "timeout"), tag.answers) is Verdict.RETRY
    assert verdict(Outcome.not_sent(), tag.answers) is Verdict.DRY_RUN


def test_a_run_gives_its_sinks_every_method_they_ask_of_it():
    """Sinks reach the run only through `SinkRun`: the run has each of its members."""
    asked = {name for name in vars(SinkRun) if not name.startswith("_")}
    assert asked >= {"admit", "entry", "refuse", "send", "open_stream", "mirror"}
    assert all(callable(getattr(Run, name)) or isinstance(getattr(Run, name), property) for name in asked)
