"""Each Encharge template: what the sandbox receives for the records a user sends, and routing by stream."""

from __future__ import annotations

from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema, state


def sent(sandbox, method: str, path: str) -> list[dict]:
    return [r for r in sandbox.requests() if r["method"] == method and r["path"] == path]


def test_people_are_upserted_with_iso_dates_and_plain_numbers(sandbox):
    run = run_target(
        sandbox_config(sandbox, batch_records=False),  # one call per record (people are batched by default)
        [
            schema("people", PERSON_PROPS, ["email"]),
            record("people", {"email": "ann@example.com", "firstName": "Ann", "score": 1.25,
                              "createdAt": "2024-03-01T10:00:00+00:00"}),
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
    assert first[0]["createdAt"].startswith("2024-03-01T10:00:00")
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
    props = {"name": {"type": "string"}, "email": {"type": "string"}, "plan": {"type": "string"},
             "amount": {"type": "number"}, "firstName": {"type": "string"}}
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
    assert sent_events["Upgraded plan"] == {"name": "Upgraded plan", "user": {"email": "ev@example.com"},
                                            "properties": {"plan": "pro", "amount": 49.9}}
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
