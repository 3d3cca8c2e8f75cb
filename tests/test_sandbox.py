"""The local Encharge sandbox behaves as Encharge does (as far as its documents say), over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from conftest import API_KEY, WRITE_KEY

from target_encharge.sandbox import Sandbox, exact_json
from target_encharge.sandbox.log import RequestLog

REST = {"X-Encharge-Token": API_KEY}
INGEST = {"X-Encharge-Token": WRITE_KEY}


def rest(sb: Sandbox, method: str, path: str, body=None, token: str | None = API_KEY, **kwargs) -> requests.Response:
    headers = {"X-Encharge-Token": token} if token is not None else {}
    return requests.request(method, sb.api_url + path, json=body, headers=headers, timeout=10, **kwargs)


def ingest(sb: Sandbox, body, token: str | None = WRITE_KEY) -> requests.Response:
    headers = {"X-Encharge-Token": token} if token is not None else {}
    return requests.post(sb.ingest_url, json=body, headers=headers, timeout=10)


def assert_envelope(answer: requests.Response, status: int, says: str = "") -> str:
    """The answer has the status and Encharge's error envelope; returns the message."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "markdown", "traceId"}
    assert error["traceId"]
    assert says.lower() in error["message"].lower(), error["message"]
    return error["message"]


def add_people(sb: Sandbox, *people: dict) -> list[dict]:
    answer = rest(sb, "POST", "/people", list(people))
    assert answer.status_code == 200, answer.text
    return answer.json()["users"]


# --- auth --------------------------------------------------------------------------------------------


def test_rest_takes_the_api_key_in_the_header_or_the_token_query(sandbox):
    assert rest(sandbox, "GET", "/accounts/info").status_code == 200
    via_query = requests.get(sandbox.api_url + "/accounts/info", params={"token": API_KEY}, timeout=10)
    assert via_query.status_code == 200
    assert via_query.json()["accountId"]


@pytest.mark.parametrize("token", [None, "not-the-key", WRITE_KEY])
def test_rest_refuses_a_missing_wrong_or_write_key_with_401_envelope(sandbox, token):
    message = assert_envelope(rest(sandbox, "POST", "/people", [{"email": "a@example.com"}], token=token), 401)
    assert "API key" in message
    if token == WRITE_KEY:
        assert "write key" in message
    assert sandbox.people() == []


@pytest.mark.parametrize("token", [None, "not-the-key", API_KEY])
def test_ingest_takes_only_the_write_key(sandbox, token):
    event = {"name": "Signed up", "user": {"email": "a@example.com"}}
    message = assert_envelope(ingest(sandbox, event, token=token), 401, "write key")
    if token == API_KEY:
        assert "API key" in message
    assert ingest(sandbox, event).status_code == 200
    assert len(sandbox.events()) == 1


def test_ingest_does_not_take_the_token_from_the_query(sandbox):
    answer = requests.post(
        sandbox.ingest_url,
        params={"token": WRITE_KEY},
        json={"name": "x", "user": {"email": "a@example.com"}},
        timeout=10,
    )
    assert_envelope(answer, 401)


def test_keys_are_never_echoed_nor_logged(sandbox):
    answers = [
        rest(sandbox, "GET", "/accounts/info", token="sandbox-api-key-but-wrong"),
        rest(sandbox, "GET", "/accounts/info", token=WRITE_KEY),
        ingest(sandbox, {"name": "x", "user": {"email": "a@example.com"}}, token=API_KEY),
        requests.get(sandbox.api_url + "/fields", params={"token": API_KEY}, timeout=10),
        requests.post(
            sandbox.url + f"/elsewhere/{API_KEY}",
            json={"note": f"key {WRITE_KEY}"},
            headers={"Authorization": f"Bearer {API_KEY}", "X-Other": API_KEY},
            timeout=10,
        ),
    ]
    for answer in answers:
        assert API_KEY not in answer.text and WRITE_KEY not in answer.text
    log = json.dumps(sandbox.requests())
    assert API_KEY not in log and WRITE_KEY not in log
    assert "***" in log
    leaked = sandbox.requests()[-1]
    assert leaked["path"] == "/elsewhere/***"
    assert leaked["headers"]["authorization"] == "***" and leaked["headers"]["x-other"] == "***"
    assert leaked["body"] == {"note": "key ***"}


def test_the_log_says_which_key_a_request_carried(sandbox):
    rest(sandbox, "GET", "/accounts/info")
    rest(sandbox, "GET", "/accounts/info", token=WRITE_KEY)
    rest(sandbox, "GET", "/accounts/info", token="nope")
    rest(sandbox, "GET", "/accounts/info", token=None)
    requests.get(sandbox.api_url + "/accounts/info", params={"token": API_KEY}, timeout=10)
    logged = sandbox.requests()
    assert [r["auth"] for r in logged] == ["api_key", "write_key", "wrong", None, "api_key"]
    assert logged[0]["headers"]["x-encharge-token"] == "***"
    assert logged[-1]["query"] == {"token": "***"}
    assert [r["status"] for r in logged] == [200, 401, 401, 401, 200]


# --- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/people", {"email": "a@example.com"}, "body must be array"),
        ("/people", [{"email": 42}], "body[0].email must be string"),
        ("/people", [{"firstName": "No identifier"}], "at least one of id, userId, email"),
        ("/people", [{"email": "a@example.com"}, {"email": None}], "body[1] needs at least one"),
        ("/people", [{"email": "a@example.com", "tags": [1]}], "body[0].tags[0] must be string"),
        ("/tags", {"email": "a@example.com"}, "tag"),
        ("/tags", {"tag": "vip"}, "at least one of id, userId, email"),
        ("/tags", {"tag": " , ", "email": "a@example.com"}, "tag is empty"),
        ("/tags", {"tag": ["vip"], "email": "a@example.com"}, "body.tag must be string"),
        ("/objects/company", {"externalId": "acme"}, "body must be array"),
        ("/objects/company", [{"externalId": 7}], "body[0].externalId must be string"),
    ],
)
def test_bodies_that_do_not_match_the_api_are_refused_with_400(sandbox, path, body, says):
    assert_envelope(rest(sandbox, "POST", path, body), 400, says)
    assert sandbox.people() == [] and sandbox.objects("company") == []


def test_a_body_that_is_not_json_is_refused(sandbox):
    form = {**REST, "Content-Type": "application/x-www-form-urlencoded"}
    answer = requests.post(sandbox.api_url + "/people", data="email=a@example.com", headers=form, timeout=10)
    assert_envelope(answer, 400, "body must be array")
    answer = requests.post(sandbox.api_url + "/people", data="[{nope", headers=REST, timeout=10)
    assert_envelope(answer, 400, "not valid JSON")
    assert_envelope(rest(sandbox, "POST", "/people"), 400, "JSON body")
    assert sandbox.requests()[1]["body"] == "[{nope"


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"user": {"email": "a@example.com"}}, "name"),
        ({"name": "", "user": {"email": "a@example.com"}}, "body.name"),
        ({"name": "Signed up"}, "user"),
        ({"name": "Signed up", "user": {"firstName": "Ann"}}, "body.user needs at least one"),
        ({"name": "Signed up", "user": {"email": "a@example.com"}, "properties": []}, "body.properties"),
    ],
)
def test_ingest_refuses_malformed_events(sandbox, event, says):
    assert_envelope(ingest(sandbox, event), 400, says)
    assert sandbox.events() == [] and sandbox.people() == []


# --- people ------------------------------------------------------------------------------------------


def test_people_are_created_with_an_encharge_id_and_their_fields(sandbox):
    users = add_people(
        sandbox, {"email": "ann@example.com", "firstName": "Ann", "plan": "pro"}, {"userId": "u-2", "lastName": "Bo"}
    )
    assert [u.get("email") for u in users] == ["ann@example.com", None]
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u["id"]) for u in users)
    ann = sandbox.person(email="ann@example.com")
    assert ann == {"id": users[0]["id"], "email": "ann@example.com", "firstName": "Ann", "plan": "pro", "tags": []}
    assert sandbox.person(userId="u-2")["lastName"] == "Bo"
    assert sandbox.person(id=users[1]["id"])["userId"] == "u-2"
    assert sandbox.person(email="nobody@example.com") is None
    assert len(sandbox.people()) == 2


def test_people_are_upserted_by_id_then_user_id_then_email(sandbox):
    (ann,) = add_people(sandbox, {"email": "ann@example.com", "firstName": "Ann"})
    # Email matches without regard to case; the same person is updated.
    (again,) = add_people(sandbox, {"email": "ANN@example.com", "plan": "pro"})
    assert again["id"] == ann["id"] and again["plan"] == "pro" and again["firstName"] == "Ann"
    # A userId is added to the person found by email, then finds her by itself and changes her email.
    add_people(sandbox, {"email": "ann@example.com", "userId": "u-1"})
    (moved,) = add_people(sandbox, {"userId": "u-1", "email": "ann@new.example.com"})
    assert moved["id"] == ann["id"]
    assert sandbox.person(email="ann@example.com") is None
    assert sandbox.person(email="ann@new.example.com")["id"] == ann["id"]
    # The id wins over userId and email.
    (by_id,) = add_people(sandbox, {"id": ann["id"], "email": "ann@third.example.com", "lastName": "Lee"})
    assert by_id["id"] == ann["id"] and by_id["email"] == "ann@third.example.com"
    assert len(sandbox.people()) == 1


def test_a_person_update_cannot_take_another_persons_email_or_an_unknown_id(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "userId": "u-1"}, {"email": "bo@example.com"})
    assert_envelope(
        rest(sandbox, "POST", "/people", [{"userId": "u-1", "email": "bo@example.com"}]),
        409,
        "already belongs to another person",
    )
    assert_envelope(rest(sandbox, "POST", "/people", [{"id": "0000-unknown"}]), 404, "no person with id")
    assert sandbox.person(userId="u-1")["email"] == "ann@example.com"


def test_tags_inside_a_person_are_added_to_the_person(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "tags": "vip, beta"})
    add_people(sandbox, {"email": "ann@example.com", "tags": ["beta", "trial"]})
    assert sandbox.person(email="ann@example.com")["tags"] == ["vip", "beta", "trial"]


def test_people_are_found_by_the_people_query_or_a_simple_one(sandbox):
    add_people(sandbox, {"email": "ann@example.com"}, {"userId": "u-2", "email": "bo@example.com"})
    answer = rest(sandbox, "GET", "/people?people[0][email]=ann@example.com&people[1][userId]=u-2")
    assert answer.status_code == 200
    assert [u["email"] for u in answer.json()["users"]] == ["ann@example.com", "bo@example.com"]
    assert rest(sandbox, "GET", "/people?userId=u-2").json()["users"][0]["email"] == "bo@example.com"
    nobody = rest(sandbox, "GET", "/people?email=nobody@example.com")
    assert nobody.status_code == 200 and nobody.json() == {"users": []}
    assert_envelope(rest(sandbox, "GET", "/people"), 400, "people[0][email]")
    everyone = rest(sandbox, "GET", "/people/all?limit=1&offset=1").json()["people"]
    assert [p["email"] for p in everyone] == ["bo@example.com"]


def test_people_are_archived_deleted_and_unsubscribed(sandbox):
    add_people(sandbox, {"email": "ann@example.com"}, {"email": "bo@example.com"})
    assert rest(sandbox, "DELETE", "/people?people[0][email]=ann@example.com").status_code == 204
    assert sandbox.person(email="ann@example.com")["archived"] is True
    assert rest(sandbox, "GET", "/people?email=ann@example.com").json() == {"users": []}
    assert rest(sandbox, "GET", "/people?email=ann@example.com&includeArchived=true").status_code == 200
    assert rest(sandbox, "DELETE", "/people?email=ann@example.com&force=true").status_code == 204
    assert sandbox.person(email="ann@example.com") is None
    assert rest(sandbox, "POST", "/people/unsubscribe?email=bo@example.com").status_code == 204
    assert sandbox.person(email="bo@example.com")["unsubscribed"] is True
    assert_envelope(rest(sandbox, "POST", "/people/unsubscribe?email=nobody@example.com"), 404)


def test_the_people_query_finds_several_people_by_any_identifier(sandbox):
    ann, bo = add_people(sandbox, {"email": "Ann@Example.com", "userId": "u-1"}, {"userId": "u-2"})
    answer = rest(
        sandbox,
        "GET",
        "/people",
        params={
            "people[0][email]": "ann@EXAMPLE.com",
            "people[1][userId]": "u-2",
            "people[2][id]": bo["id"],
            "people[3][email]": "no@example.com",
        },
    )
    assert answer.status_code == 200
    # Each person once, in the order named; who does not exist is simply not there.
    assert [u["id"] for u in answer.json()["users"]] == [ann["id"], bo["id"]]
    assert rest(sandbox, "GET", "/people?people[0][email]=no@example.com").json() == {"users": []}


def test_archived_people_leave_lookups_listings_and_tagging_until_an_upsert_brings_them_back(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "tags": "vip"}, {"userId": "u-2"}, {"email": "cy@example.com"})
    archived = rest(sandbox, "DELETE", "/people?people[0][email]=ANN@example.com&people[1][userId]=u-2")
    assert archived.status_code == 204 and archived.content == b""
    assert rest(sandbox, "GET", "/people?people[0][email]=ann@example.com").json() == {"users": []}
    with_archived = rest(
        sandbox, "GET", "/people?people[0][email]=ann@example.com&people[1][userId]=u-2&includeArchived=true"
    ).json()["users"]
    assert [(u.get("email"), u["archived"]) for u in with_archived] == [("ann@example.com", True), (None, True)]
    assert [p["email"] for p in rest(sandbox, "GET", "/people/all").json()["people"]] == ["cy@example.com"]
    assert rest(sandbox, "GET", "/accounts/info").json()["peopleCount"] == 1
    assert_envelope(rest(sandbox, "POST", "/tags", {"tag": "beta", "email": "ann@example.com"}), 404, "archived")
    # Kept, flagged, with their tags: archiving again is fine, and an upsert brings the same person back.
    assert sandbox.person(email="ann@example.com")["tags"] == ["vip"]
    assert rest(sandbox, "DELETE", "/people?people[0][email]=ann@example.com").status_code == 204
    (back,) = add_people(sandbox, {"email": "ann@example.com", "plan": "pro"})
    assert back["id"] == sandbox.person(email="ann@example.com")["id"] and "archived" not in back
    assert back["tags"] == ["vip"]
    assert [u["email"] for u in rest(sandbox, "GET", "/people?people[0][email]=ann@example.com").json()["users"]] == [
        "ann@example.com"
    ]


def test_a_forced_delete_takes_the_person_their_tags_and_events(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "userId": "u-1", "tags": "vip"}, {"email": "bo@example.com"})
    ingest(sandbox, {"name": "Signed up", "user": {"email": "ANN@example.com"}})
    ingest(sandbox, {"name": "Paid", "user": {"userId": "u-1"}})
    ingest(sandbox, {"name": "Signed up", "user": {"email": "bo@example.com"}})
    answer = rest(sandbox, "DELETE", "/people?people[0][userId]=u-1&force=true")
    assert answer.status_code == 204
    assert sandbox.person(email="ann@example.com") is None
    assert [(e["name"], e["user"]) for e in sandbox.events()] == [("Signed up", {"email": "bo@example.com"})]
    (deleted,) = sandbox.deleted_people()
    assert (deleted["email"].lower(), deleted["userId"]) == ("ann@example.com", "u-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", deleted["deletedAt"])
    # Gone for good: the next upsert is a new person without the old tags.
    (again,) = add_people(sandbox, {"email": "ann@example.com"})
    assert again["id"] != deleted["id"] and again["tags"] == []


def test_deleting_people_one_of_whom_is_not_found_is_404_and_changes_nobody(sandbox):
    add_people(sandbox, {"email": "ann@example.com"})
    for force in ("", "&force=true"):
        answer = rest(
            sandbox, "DELETE", f"/people?people[0][email]=ann@example.com&people[1][email]=gone@example.com{force}"
        )
        assert_envelope(answer, 404, "gone@example.com")
        assert "archived" not in sandbox.person(email="ann@example.com")
    assert_envelope(rest(sandbox, "DELETE", "/people?people[0][email]=gone@example.com"), 404)
    assert_envelope(rest(sandbox, "DELETE", "/people"), 400, "people[0][email]")
    assert sandbox.deleted_people() == []


# --- tags --------------------------------------------------------------------------------------------


def test_tags_are_added_with_201_and_removed_with_204_without_bodies(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "userId": "u-1"})
    added = rest(sandbox, "POST", "/tags", {"tag": "vip, beta", "email": "ann@example.com"})
    assert added.status_code == 201 and added.content == b""
    assert added.headers["Content-Length"] == "0" and "Content-Type" not in added.headers
    rest(sandbox, "POST", "/tags", {"tag": "vip,trial", "userId": "u-1"})
    assert sandbox.person(email="ann@example.com")["tags"] == ["vip", "beta", "trial"]
    removed = rest(sandbox, "DELETE", "/tags", {"tag": "beta,vip", "email": "ann@example.com"})
    assert removed.status_code == 204 and removed.content == b""
    assert "Content-Type" not in removed.headers
    assert sandbox.person(email="ann@example.com")["tags"] == ["trial"]


def test_tagging_an_unknown_person_is_404_and_creates_nobody(sandbox):
    assert_envelope(
        rest(sandbox, "POST", "/tags", {"tag": "vip", "email": "nobody@example.com"}), 404, "nobody@example.com"
    )
    assert_envelope(rest(sandbox, "DELETE", "/tags", {"tag": "vip", "userId": "u-404"}), 404)
    assert sandbox.people() == []


# --- custom objects and schemas -----------------------------------------------------------------------


def test_custom_objects_are_created_per_schema(sandbox):
    answer = rest(
        sandbox,
        "POST",
        "/objects/company",
        [{"externalId": "acme", "name": "Acme", "employees": 120}, {"externalId": "globex", "name": "Globex"}],
    )
    assert answer.status_code == 200
    created = answer.json()["objects"]
    assert [o["externalId"] for o in created] == ["acme", "globex"]
    assert all(isinstance(o["id"], int) for o in created)
    assert sandbox.objects("company") == created
    assert sandbox.objects("subscription") == []
    rest(sandbox, "POST", "/objects/subscription", [{"externalId": "s-1", "plan": "pro"}])
    assert [o["plan"] for o in sandbox.objects("subscription")] == ["pro"]
    assert len(sandbox.objects("company")) == 2


@pytest.mark.parametrize("name", ["Company", "invoice"])
def test_an_unknown_schema_name_is_404_case_sensitive(sandbox, name):
    message = assert_envelope(rest(sandbox, "POST", f"/objects/{name}", [{"externalId": "x"}]), 404, name)
    assert "case-sensitive" in message
    assert sandbox.objects("company") == []


def test_creating_an_existing_external_id_is_refused_whole(sandbox):
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}])
    assert_envelope(
        rest(sandbox, "POST", "/objects/company", [{"externalId": "new"}, {"externalId": "acme"}]), 409, "body[1]"
    )
    assert [o["externalId"] for o in sandbox.objects("company")] == ["acme"]


def test_put_upserts_one_object_by_external_id(sandbox):
    first = rest(sandbox, "PUT", "/objects/company", {"externalId": "acme", "name": "Acme"}).json()
    assert first["created"] is True
    second = rest(sandbox, "PUT", "/objects/company", {"externalId": "acme", "employees": 5}).json()
    assert second == {
        "created": False,
        "object": {"id": first["object"]["id"], "externalId": "acme", "name": "Acme", "employees": 5},
    }
    assert_envelope(rest(sandbox, "PUT", "/objects/company", {"name": "no key"}), 400, "externalId")
    assert_envelope(rest(sandbox, "PUT", "/objects/company", [{"externalId": "acme"}]), 400, "body must be object")
    assert len(sandbox.objects("company")) == 1


def test_objects_are_read_patched_and_deleted_by_id_or_external_id(sandbox):
    acme, globex = rest(
        sandbox, "POST", "/objects/company", [{"externalId": "acme", "name": "Acme"}, {"externalId": "globex"}]
    ).json()["objects"]
    by_id = rest(sandbox, "PATCH", f"/objects/company/{acme['id']}", {"industry": "Software"})
    assert by_id.status_code == 200 and by_id.json()["object"]["industry"] == "Software"
    by_external = rest(sandbox, "PATCH", "/objects/company/externalId/acme", {"employees": 9})
    assert by_external.json()["object"] == {
        "id": acme["id"],
        "externalId": "acme",
        "name": "Acme",
        "industry": "Software",
        "employees": 9,
    }
    assert rest(sandbox, "GET", f"/objects/company/{acme['id']}").json()["object"]["employees"] == 9
    assert rest(sandbox, "GET", "/objects/company/externalId/globex").json()["object"]["id"] == globex["id"]
    assert rest(sandbox, "GET", "/objects/company/count").json() == {"count": 2}
    assert [o["externalId"] for o in rest(sandbox, "GET", "/objects/company").json()["objects"]] == ["acme", "globex"]
    deleted = rest(sandbox, "DELETE", "/objects/company/externalId/acme")
    assert deleted.status_code == 204 and deleted.content == b""
    assert rest(sandbox, "DELETE", f"/objects/company/{globex['id']}").status_code == 204
    assert sandbox.objects("company") == []
    assert_envelope(rest(sandbox, "PATCH", "/objects/company/externalId/acme", {"name": "x"}), 404, "acme")
    assert_envelope(rest(sandbox, "DELETE", "/objects/company/999"), 404)
    assert_envelope(rest(sandbox, "GET", "/objects/Company/1"), 404, "case-sensitive")


def test_put_upserts_by_id_and_refuses_an_unknown_id(sandbox):
    (acme,) = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}]).json()["objects"]
    answer = rest(sandbox, "PUT", "/objects/company", {"id": acme["id"], "name": "Acme"})
    assert answer.json() == {"created": False, "object": {"id": acme["id"], "externalId": "acme", "name": "Acme"}}
    assert_envelope(rest(sandbox, "PUT", "/objects/company", {"id": 999, "name": "x"}), 404, "999")
    assert len(sandbox.objects("company")) == 1


def test_duplicate_mode_stores_a_second_object_with_the_same_external_id():
    with Sandbox(duplicate_objects=True) as sb:
        assert sb.options == {"duplicate_objects": True}
        first = rest(sb, "POST", "/objects/company", [{"externalId": "acme", "name": "Acme"}]).json()["objects"]
        again = rest(
            sb,
            "POST",
            "/objects/company",
            [{"externalId": "acme", "name": "Acme 2"}, {"externalId": "acme", "name": "Acme 3"}],
        )
        assert again.status_code == 200
        assert [o["id"] for o in sb.objects("company")] == [first[0]["id"]] + [o["id"] for o in again.json()["objects"]]
        state = requests.get(sb.url + "/_sandbox/state", timeout=10).json()
        assert [o["name"] for o in state["objects"]["company"]] == ["Acme", "Acme 2", "Acme 3"]
        assert state["duplicateObjects"] == {"company": {"acme": 3}}
        assert "externalIds held by several objects: acme x3" in sb.summary()
        # Reads by externalId see the oldest; writes reach them all.
        assert rest(sb, "GET", "/objects/company/externalId/acme").json()["object"]["name"] == "Acme"
        patched = rest(sb, "PATCH", "/objects/company/externalId/acme", {"plan": "pro"})
        assert patched.json()["object"]["id"] == first[0]["id"]
        put = rest(sb, "PUT", "/objects/company", {"externalId": "acme", "seats": 3}).json()
        assert put["created"] is False and put["object"]["id"] == first[0]["id"]
        assert [(o["plan"], o["seats"]) for o in sb.objects("company")] == [("pro", 3)] * 3
        assert rest(sb, "DELETE", "/objects/company/externalId/acme").status_code == 204
        assert sb.objects("company") == [] and sb.state()["duplicateObjects"] == {}
        assert_envelope(rest(sb, "GET", "/objects/company/externalId/acme"), 404, "acme")


def test_the_duplicate_mode_can_be_switched_at_run_time(sandbox):
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}])
    assert requests.get(sandbox.url + "/_sandbox/options", timeout=10).json() == {
        "options": {"duplicate_objects": False}
    }
    switched = requests.post(sandbox.url + "/_sandbox/options", json={"duplicate_objects": True}, timeout=10)
    assert switched.json() == {"options": {"duplicate_objects": True}}
    assert rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}]).status_code == 200
    # PATCH may then move an externalId onto one that is taken, too.
    (globex,) = rest(sandbox, "POST", "/objects/company", [{"externalId": "globex"}]).json()["objects"]
    assert rest(sandbox, "PATCH", f"/objects/company/{globex['id']}", {"externalId": "acme"}).status_code == 200
    assert sandbox.state()["duplicateObjects"] == {"company": {"acme": 3}}
    assert sandbox.set_options(duplicate_objects=False) == {"duplicate_objects": False}
    assert_envelope(rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}]), 409, "already exists")
    assert_envelope(
        requests.post(sandbox.url + "/_sandbox/options", json={"duplicate_objects": "yes"}, timeout=10), 400, "boolean"
    )
    assert_envelope(requests.post(sandbox.url + "/_sandbox/options", json={"twice": True}, timeout=10), 400)
    sandbox.set_options(duplicate_objects=True)
    sandbox.reset()  # forgets the account, keeps the mode
    assert sandbox.options == {"duplicate_objects": True} and sandbox.objects("company") == []


def test_schemas_list_the_configured_custom_objects(sandbox):
    answer = rest(sandbox, "GET", "/schemas")
    assert answer.status_code == 200
    objects = answer.json()["objects"]
    assert [o["name"] for o in objects] == ["company", "subscription"]
    assert objects[0]["displayNameSingular"] == "Company" and objects[0]["displayNamePlural"] == "Companies"
    assert rest(sandbox, "GET", "/schemas/subscription").json()["object"]["name"] == "subscription"
    assert_envelope(rest(sandbox, "GET", "/schemas/Subscription"), 404)
    with Sandbox(schemas=("invoice",)) as other:
        assert [o["name"] for o in rest(other, "GET", "/schemas").json()["objects"]] == ["invoice"]
        assert rest(other, "POST", "/objects/invoice", [{"externalId": "i-1"}]).status_code == 200
        assert_envelope(rest(other, "POST", "/objects/company", [{"externalId": "c"}]), 404)


def test_account_info_and_person_fields(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "plan": "pro", "seats": 3})
    info = rest(sandbox, "GET", "/accounts/info").json()
    assert info["peopleCount"] == 1
    assert {"accountId", "name", "site", "status", "timezone", "services", "activeServices"} <= set(info)
    fields = {f["name"]: f["type"] for f in rest(sandbox, "GET", "/fields").json()["items"]}
    assert fields["email"] == "string" and fields["plan"] == "string" and fields["seats"] == "number"


def test_each_sandbox_can_stand_for_its_own_account(sandbox):
    default = rest(sandbox, "GET", "/accounts/info").json()
    assert (default["accountId"], default["name"]) == (1, "Encharge sandbox")
    with Sandbox(account_id=4242, account_name="Other Co") as other:
        info = rest(other, "GET", "/accounts/info").json()
        assert (info["accountId"], info["name"]) == (4242, "Other Co")
        assert other.account == {"accountId": 4242, "name": "Other Co"}
        assert requests.get(other.url + "/_sandbox/state", timeout=10).json()["account"] == other.account
        other.reset()
        assert rest(other, "GET", "/accounts/info").json()["accountId"] == 4242
    assert rest(sandbox, "GET", "/accounts/info").json()["accountId"] == 1  # stable, run after run


# --- ingest ------------------------------------------------------------------------------------------


def test_identify_updates_the_person_and_records_no_event(sandbox):
    answer = ingest(
        sandbox, {"name": "identify", "user": {"email": "ann@example.com", "firstName": "Ann", "plan": "pro"}}
    )
    assert answer.status_code == 200
    assert sandbox.person(email="ann@example.com")["plan"] == "pro"
    assert sandbox.events() == []


def test_events_are_recorded_as_received_and_upsert_their_person(sandbox):
    event = {
        "name": "Upgraded plan",
        "user": {"email": "ann@example.com", "userId": "u-1"},
        "properties": {"plan": "pro", "seats": 3},
        "sourceIp": "127.0.0.1",
    }
    assert ingest(sandbox, event).status_code == 200
    (recorded,) = sandbox.events()
    received = recorded.pop("receivedAt")
    assert recorded == event
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", received)
    assert sandbox.person(userId="u-1")["email"] == "ann@example.com"


BIG = "123456789012345678901234567890.123456789"  # 39 digits: a float keeps 17


def test_numbers_keep_every_digit_in_the_store_answers_state_and_summary(sandbox):
    body = (
        '[{"email": "ann@example.com", "big": ' + BIG + ', "small": 49.9, "huge": 1e400, '
        '"count": 123456789012345678901234567890123456789}]'
    )
    answer = requests.post(sandbox.api_url + "/people", data=body, headers=REST, timeout=10)
    assert answer.status_code == 200
    assert f'"big":{BIG}' in answer.text and '"huge":1E+400' in answer.text
    ann = sandbox.person(email="ann@example.com")
    assert ann["big"] == Decimal(BIG) and ann["huge"] == Decimal("1e400")
    assert ann["small"] == 49.9 and isinstance(ann["small"], float)  # what a float holds stays a float
    assert ann["count"] == 123456789012345678901234567890123456789
    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10)
    assert f'"big":{BIG}' in state.text
    assert state.json(parse_float=Decimal)["people"][0]["big"] == Decimal(BIG)
    logged = requests.get(sandbox.url + "/_sandbox/requests", timeout=10).json(parse_float=Decimal)["requests"]
    assert logged[0]["body"][0]["big"] == Decimal(BIG)
    assert f"big={BIG}" in sandbox.summary()
    assert rest(sandbox, "GET", "/fields").json()["items"][-4:] == [
        {"name": name, "title": name, "type": "number", "readOnly": False, "array": False, "firstClassField": False}
        for name in ("big", "small", "huge", "count")
    ]


def test_exact_numbers_reach_objects_and_events(sandbox):
    obj = '[{"externalId": "acme", "revenue": ' + BIG + ', "nested": {"list": [' + BIG + "]}}]"
    assert requests.post(sandbox.api_url + "/objects/company", data=obj, headers=REST, timeout=10).status_code == 200
    event = '{"name": "Paid", "user": {"email": "ann@example.com"}, "properties": {"amount": ' + BIG + "}}"
    assert requests.post(sandbox.ingest_url, data=event, headers=INGEST, timeout=10).status_code == 200
    (acme,) = sandbox.objects("company")
    assert acme["revenue"] == Decimal(BIG) and acme["nested"] == {"list": [Decimal(BIG)]}
    assert sandbox.events()[0]["properties"]["amount"] == Decimal(BIG)
    got = rest(sandbox, "GET", "/objects/company/externalId/acme").text
    assert f'"revenue":{BIG}' in got and f'"list":[{BIG}]' in got
    summary = sandbox.summary()
    assert f"revenue={BIG}" in summary and f"amount={BIG}" in summary


def test_a_string_cannot_pose_as_an_exact_number():
    tricky = exact_json.dumps({"a": Decimal(BIG), "b": "\x00exact-0:0"})
    assert json.loads(tricky, parse_float=Decimal) == {"a": Decimal(BIG), "b": "\x00exact-0:0"}


# --- fields ------------------------------------------------------------------------------------------

#: What POST /v1/fields and POST /v1/schemas/{name}/fields answer for each field: PersonField's required keys.
PERSON_FIELD_KEYS = {
    "name",
    "type",
    "title",
    "format",
    "readOnly",
    "canMapFrom",
    "firstClassField",
    "array",
    "createdBy",
}
FIELD_TYPES = {"string", "number", "boolean", "integer", "any"}


def person_fields(sb: Sandbox) -> dict[str, dict]:
    answer = rest(sb, "GET", "/fields")
    assert answer.status_code == 200, answer.text
    return {f["name"]: f for f in answer.json()["items"]}


def company_schema(sb: Sandbox) -> dict:
    return next(o for o in rest(sb, "GET", "/schemas").json()["objects"] if o["name"] == "company")


def test_the_account_has_encharges_built_in_person_fields_some_read_only(sandbox):
    fields = person_fields(sandbox)
    for name in ("email", "userId", "firstName", "lastName", "name", "id", "unsubscribed", "createdAt"):
        assert name in fields, name
    assert all({"name", "type"} <= set(f) and f["type"] in FIELD_TYPES for f in fields.values())
    assert fields["id"]["readOnly"] is True and fields["email"]["readOnly"] is False
    assert fields["createdAt"]["readOnly"] is True and fields["createdAt"]["format"] == "date-time"
    assert fields["unsubscribed"]["type"] == "boolean"
    assert all(f["readOnly"] is False for n, f in fields.items() if n in ("email", "userId", "firstName", "name"))


def test_a_person_field_is_created_with_its_enum_and_listed_from_then_on(sandbox):
    answer = rest(
        sandbox,
        "POST",
        "/fields",
        [
            {"name": "plan", "type": "string", "enum": ["free", "pro"], "allowNewEnumValues": False},
            {"name": "signedUpAt", "title": "Signed up", "type": "string", "format": "date-time"},
        ],
    )
    assert answer.status_code == 200, answer.text
    plan, signed_up = answer.json()["items"]
    assert set(plan) >= PERSON_FIELD_KEYS and set(signed_up) >= PERSON_FIELD_KEYS
    assert (plan["enum"], plan["allowNewEnumValues"], plan["readOnly"]) == (["free", "pro"], False, False)
    assert (signed_up["title"], signed_up["format"]) == ("Signed up", "date-time")
    fields = person_fields(sandbox)
    assert fields["plan"]["enum"] == ["free", "pro"] and fields["plan"]["allowNewEnumValues"] is False
    assert fields["signedUpAt"]["format"] == "date-time"
    assert sandbox.person_fields() == list(person_fields(sandbox).values())
    # A name taken (a field that exists, or twice in one body) is refused, and then nothing is created.
    assert_envelope(
        rest(sandbox, "POST", "/fields", [{"name": "seats", "type": "number"}, {"name": "plan", "type": "string"}]),
        409,
        "'plan' already",
    )
    assert_envelope(rest(sandbox, "POST", "/fields", [{"name": "email", "type": "string"}]), 409, "already exists")
    twice = [{"name": "x", "type": "string"}, {"name": "x", "type": "number"}]
    assert_envelope(rest(sandbox, "POST", "/fields", twice), 409, "'x'")
    assert "seats" not in person_fields(sandbox) and "x" not in person_fields(sandbox)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "seats", "type": "number"}, "must be array"),  # the OpenAPI's body is an array of fields
        ([{"name": "seats"}], "body[0] must contain ['type']"),
        ([{"name": "seats", "type": "object"}], "body[0].type must be one of"),
        ([{"name": "", "type": "string"}], "body[0].name must be longer"),
        ([{"name": "seats", "type": "number", "colour": "red"}], "must not contain"),
        ([{"name": "when", "type": "string", "format": "time"}], "body[0].format must be one of"),
    ],
)
def test_a_field_body_that_does_not_fit_the_openapi_is_refused(sandbox, body, says):
    assert_envelope(rest(sandbox, "POST", "/fields", body), 400, says)
    assert_envelope(rest(sandbox, "POST", "/schemas/company/fields", body), 400, says)
    assert "seats" not in person_fields(sandbox)


def test_custom_object_fields_are_listed_in_their_schema_and_created(sandbox):
    fields = {f["name"]: f for f in company_schema(sandbox)["fields"]}
    assert {"id", "externalId", "name"} <= set(fields)
    assert fields["id"]["readOnly"] is True and fields["externalId"]["readOnly"] is False
    answer = rest(
        sandbox,
        "POST",
        "/schemas/company/fields",
        [{"name": "industry", "type": "string"}, {"name": "seats", "type": "integer"}],
    )
    assert answer.status_code == 200, answer.text
    created = answer.json()["fields"]
    assert [f["name"] for f in created] == ["industry", "seats"] and all(set(f) >= PERSON_FIELD_KEYS for f in created)
    assert [f["name"] for f in company_schema(sandbox)["fields"]][-2:] == ["industry", "seats"]
    assert rest(sandbox, "GET", "/schemas/company").json()["object"]["fields"][-1]["type"] == "integer"
    assert [f["name"] for f in sandbox.object_fields("company")][-2:] == ["industry", "seats"]
    assert "industry" not in {f["name"] for f in sandbox.object_fields("subscription")}
    assert "industry" not in person_fields(sandbox)
    assert_envelope(
        rest(sandbox, "POST", "/schemas/company/fields", [{"name": "industry", "type": "string"}]),
        409,
        "already exists",
    )
    assert_envelope(
        rest(sandbox, "POST", "/schemas/Company/fields", [{"name": "x", "type": "string"}]), 404, "case-sensitive"
    )


def test_unknown_fields_are_kept_and_listed_unless_the_account_drops_them(sandbox):
    # By default, a field the account lacks is kept, and listed from then on (people and objects alike).
    add_people(sandbox, {"email": "ann@example.com", "plan": "pro"})
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme", "industry": "rockets"}])
    assert sandbox.person(email="ann@example.com")["plan"] == "pro" and "plan" in person_fields(sandbox)
    assert sandbox.objects("company")[0]["industry"] == "rockets"
    assert "industry" in {f["name"] for f in company_schema(sandbox)["fields"]}
    assert requests.get(sandbox.url + "/_sandbox/field-policy", timeout=10).json() == {
        "fieldPolicy": {"drop_unknown_fields": False}
    }

    switched = requests.post(sandbox.url + "/_sandbox/field-policy", json={"drop_unknown_fields": True}, timeout=10)
    assert switched.json() == {"fieldPolicy": {"drop_unknown_fields": True}}
    (bo,) = add_people(sandbox, {"email": "bo@example.com", "plan": "free", "seats": 3, "tags": "vip"})
    assert "seats" not in bo and bo["plan"] == "free" and bo["tags"] == ["vip"]  # known fields and tags stay
    assert (
        ingest(
            sandbox, {"name": "identify", "user": {"email": "cy@example.com", "seats": 4, "firstName": "Cy"}}
        ).status_code
        == 200
    )
    cy = sandbox.person(email="cy@example.com")
    assert cy["firstName"] == "Cy" and "seats" not in cy
    (globex,) = rest(
        sandbox, "POST", "/objects/company", [{"externalId": "globex", "name": "Globex", "revenue": 10}]
    ).json()["objects"]
    assert "revenue" not in globex and globex["name"] == "Globex"
    rest(sandbox, "PATCH", "/objects/company/externalId/globex", {"revenue": 11, "industry": "chemicals"})
    assert sandbox.objects("company")[1] == {
        "id": globex["id"],
        "externalId": "globex",
        "name": "Globex",
        "industry": "chemicals",
    }
    assert "seats" not in person_fields(sandbox)
    assert "revenue" not in {f["name"] for f in company_schema(sandbox)["fields"]}
    # What was dropped is counted, shown, and stops once the field is created.
    assert sandbox.state()["droppedFields"] == {"person": {"seats": 2}, "company": {"revenue": 2}}
    assert "person.seats x2" in sandbox.summary() and "company.revenue x2" in sandbox.summary()
    rest(sandbox, "POST", "/fields", [{"name": "seats", "type": "number"}])
    add_people(sandbox, {"email": "bo@example.com", "seats": 5})
    assert sandbox.person(email="bo@example.com")["seats"] == 5

    assert sandbox.set_field_policy(drop_unknown_fields=False) == {"drop_unknown_fields": False}
    add_people(sandbox, {"email": "bo@example.com", "team": "red"})
    assert sandbox.person(email="bo@example.com")["team"] == "red"
    assert_envelope(
        requests.post(sandbox.url + "/_sandbox/field-policy", json={"drop_unknown_fields": "yes"}, timeout=10),
        400,
        "boolean",
    )
    assert_envelope(requests.post(sandbox.url + "/_sandbox/field-policy", json={"drop": True}, timeout=10), 400)
    with Sandbox(drop_unknown_fields=True) as sb:
        assert sb.field_policy == {"drop_unknown_fields": True}
        assert "plan" not in add_people(sb, {"email": "ann@example.com", "plan": "pro"})[0]
        sb.reset()  # forgets the account, keeps the policy
        assert sb.field_policy == {"drop_unknown_fields": True}


def test_read_only_fields_are_listed_as_such_and_stored_as_sent(sandbox):
    # Encharge's help: its non-editable fields can still be set through the API; the target decides to leave them out.
    (ann,) = add_people(sandbox, {"email": "ann@example.com", "createdAt": "2024-01-02T03:04:05Z"})
    assert ann["createdAt"] == "2024-01-02T03:04:05Z"
    assert person_fields(sandbox)["createdAt"]["readOnly"] is True


# --- Encharge ids and associations ----------------------------------------------------------------


def test_people_and_objects_have_stable_encharge_ids_in_answers_and_lookups(sandbox):
    ann, bo = add_people(sandbox, {"email": "ann@example.com"}, {"email": "bo@example.com", "userId": "u-2"})
    (again,) = add_people(sandbox, {"email": "ann@example.com", "firstName": "Ann"})
    assert again["id"] == ann["id"] and ann["id"] != bo["id"]
    found = rest(
        sandbox, "GET", "/people", params={"people[0][email]": "ann@example.com", "people[1][email]": "bo@example.com"}
    ).json()["users"]
    assert [(u["email"], u["id"]) for u in found] == [("ann@example.com", ann["id"]), ("bo@example.com", bo["id"])]
    acme, globex = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}, {"externalId": "globex"}]).json()[
        "objects"
    ]
    assert isinstance(acme["id"], int) and acme["id"] != globex["id"]
    assert rest(sandbox, "GET", "/objects/company/externalId/globex").json()["object"]["id"] == globex["id"]
    put = rest(sandbox, "PUT", "/objects/company", {"externalId": "acme", "name": "Acme"}).json()
    assert put["object"]["id"] == acme["id"]


def test_a_person_and_a_company_are_associated_and_unlinked_by_their_encharge_ids(sandbox):
    (ann,) = add_people(sandbox, {"email": "ann@example.com"})
    (acme,) = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme", "name": "Acme"}]).json()["objects"]
    (definition,) = company_schema(sandbox)["associations"]
    assert {"id", "type", "fromObject", "toObject"} <= set(definition)
    assert {definition["fromObject"], definition["toObject"]} == {"person", "company"}
    assert definition["type"] in ("1:1", "1:M", "M:M")
    association = definition["id"]

    linked = rest(sandbox, "POST", f"/objects/person/{ann['id']}/associations/default/company/{acme['id']}")
    assert linked.status_code == 201 and linked.content == b""
    assert sandbox.associations() == [
        {
            "associationId": association,
            "fromObject": "person",
            "fromId": ann["id"],
            "toObject": "company",
            "toId": acme["id"],
        }
    ]
    # Linking again, by id and from the other side (associations are two-way), is the same one link.
    assert (
        rest(sandbox, "POST", f"/objects/company/{acme['id']}/associations/{association}/{ann['id']}").status_code
        == 201
    )
    assert len(sandbox.associations()) == 1
    companies = rest(sandbox, "GET", f"/objects/person/{ann['id']}/associations/{association}").json()
    assert companies == {"objects": [{"id": acme["id"], "externalId": "acme", "name": "Acme"}]}
    people = rest(sandbox, "GET", f"/objects/company/{acme['id']}/associations").json()["objects"]
    assert [p["email"] for p in people["person"]] == ["ann@example.com"]
    assert "Associations (1)" in sandbox.summary() and "person ann@example.com" in sandbox.summary()
    assert "company acme" in sandbox.summary()

    removed = rest(sandbox, "DELETE", f"/objects/person/{ann['id']}/associations/{association}/{acme['id']}")
    assert removed.status_code == 204 and removed.content == b""
    assert sandbox.associations() == []
    assert_envelope(
        rest(sandbox, "DELETE", f"/objects/person/{ann['id']}/associations/{association}/{acme['id']}"),
        404,
        "nothing to remove",
    )
    assert rest(sandbox, "GET", f"/objects/company/{acme['id']}/associations").json() == {"objects": {}}


def test_associations_refuse_unknown_ids_objects_and_associations(sandbox):
    (ann,) = add_people(sandbox, {"email": "ann@example.com"})
    (acme,) = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}]).json()["objects"]
    (sub,) = rest(sandbox, "POST", "/objects/subscription", [{"externalId": "s-1"}]).json()["objects"]
    association = company_schema(sandbox)["associations"][0]["id"]
    person, company = f"/objects/person/{ann['id']}", f"/objects/company/{acme['id']}"
    for path, status, says in [
        (
            f"/objects/person/00000000-0000-0000-0000-000000000000/associations/default/company/{acme['id']}",
            404,
            "no person with id",
        ),
        (f"{person}/associations/default/company/999", 404, "no company object with id"),
        (f"{person}/associations/default/company/{ann['id']}", 404, "no company object with id"),  # a person's id
        (f"{person}/associations/default/invoice/1", 404, "no custom object schema named 'invoice'"),
        (f"/objects/Company/{acme['id']}/associations/default/person/{ann['id']}", 404, "case-sensitive"),
        (f"{person}/associations/999/{acme['id']}", 404, "no association with id '999'"),
        (f"{person}/associations/default/{acme['id']}", 404, "no association with id 'default'"),
        (f"{company}/associations/default/subscription/{sub['id']}", 404, "no association between company and"),
    ]:
        assert_envelope(rest(sandbox, "POST", path), status, says)
    # An association between company and subscription does not link a person.
    defined = rest(
        sandbox,
        "POST",
        "/schemas/associations",
        {"type": "1:M", "fromObject": "company", "toObject": "subscription", "name": "Plan"},
    )
    other = defined.json()["association"]["id"]
    assert_envelope(rest(sandbox, "POST", f"{person}/associations/{other}/{sub['id']}"), 400, "not person")
    # A second person<->company association makes the default ambiguous.
    rest(sandbox, "POST", "/schemas/associations", {"type": "M:M", "fromObject": "company", "toObject": "person"})
    assert_envelope(
        rest(sandbox, "POST", f"{person}/associations/default/company/{acme['id']}"), 400, "several associations"
    )
    # An archived person is out of associations, as of tagging.
    rest(sandbox, "DELETE", "/people?email=ann@example.com")
    assert_envelope(rest(sandbox, "POST", f"{person}/associations/{association}/{acme['id']}"), 404, "archived")
    assert sandbox.associations() == []


def test_association_definitions_are_added_shown_in_both_schemas_and_removed_with_their_links(sandbox):
    answer = rest(
        sandbox,
        "POST",
        "/schemas/associations",
        {"type": "1:M", "fromObject": "company", "toObject": "subscription", "name": "Plan"},
    )
    assert answer.status_code == 200, answer.text
    plan = answer.json()["association"]
    assert {k: plan[k] for k in ("type", "fromObject", "toObject", "name")} == {
        "type": "1:M",
        "fromObject": "company",
        "toObject": "subscription",
        "name": "Plan",
    }
    assert plan in company_schema(sandbox)["associations"]
    assert plan in rest(sandbox, "GET", "/schemas/subscription").json()["object"]["associations"]
    (acme,) = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}]).json()["objects"]
    (sub,) = rest(sandbox, "POST", "/objects/subscription", [{"externalId": "s-1"}]).json()["objects"]
    assert (
        rest(
            sandbox, "POST", f"/objects/subscription/{sub['id']}/associations/default/company/{acme['id']}"
        ).status_code
        == 201
    )
    assert sandbox.associations()[0]["fromObject"] == "company"  # kept in the definition's own order
    assert rest(sandbox, "DELETE", f"/schemas/associations/{plan['id']}").status_code == 204
    assert sandbox.associations() == [] and plan not in company_schema(sandbox)["associations"]
    assert_envelope(rest(sandbox, "DELETE", f"/schemas/associations/{plan['id']}"), 404)
    assert_envelope(
        rest(sandbox, "POST", "/schemas/associations", {"type": "1:M", "fromObject": "company", "toObject": "invoice"}),
        404,
        "invoice",
    )
    assert_envelope(
        rest(sandbox, "POST", "/schemas/associations", {"type": "many", "fromObject": "company", "toObject": "person"}),
        400,
        "type must be one of",
    )


def test_a_person_or_object_that_goes_takes_its_links_with_it(sandbox):
    ann, bo = add_people(sandbox, {"email": "ann@example.com"}, {"email": "bo@example.com"})
    acme, globex = rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}, {"externalId": "globex"}]).json()[
        "objects"
    ]
    for person, company in ((ann, acme), (bo, acme), (bo, globex)):
        rest(sandbox, "POST", f"/objects/person/{person['id']}/associations/default/company/{company['id']}")
    assert len(sandbox.associations()) == 3
    rest(sandbox, "DELETE", "/people?email=ann@example.com&force=true")
    assert [(a["fromId"], a["toId"]) for a in sandbox.associations()] == [
        (bo["id"], acme["id"]),
        (bo["id"], globex["id"]),
    ]
    rest(sandbox, "DELETE", "/objects/company/externalId/acme")
    assert [(a["fromId"], a["toId"]) for a in sandbox.associations()] == [(bo["id"], globex["id"])]
    rest(sandbox, "DELETE", "/people?email=bo@example.com")  # archived: the link stays, for when bo comes back
    assert len(sandbox.associations()) == 1
    sandbox.reset()
    assert sandbox.associations() == [] and len(company_schema(sandbox)["associations"]) == 1


def test_seeding_puts_fields_and_associations_in_the_account_without_a_logged_request(sandbox):
    seeded = sandbox.seed(
        people=[{"email": "ann@example.com"}, {"userId": "u-2"}],
        objects={"company": [{"externalId": "acme"}]},
        fields=[{"name": "tier", "type": "string", "enum": ["a", "b"], "allowNewEnumValues": False}],
        object_fields={"company": [{"name": "industry", "type": "string"}]},
        associations=[
            {
                "objectName": "person",
                "email": "ann@example.com",
                "targetObjectName": "company",
                "targetExternalId": "acme",
            },
            {
                "objectName": "person",
                "userId": "u-2",
                "targetObjectName": "company",
                "targetExternalId": "acme",
                "associationId": 1,
            },
        ],
    )
    assert seeded == {"people": 2, "tags": 0, "objects": 1, "fields": 1, "object_fields": 1, "associations": 2}
    assert sandbox.requests() == []
    acme = sandbox.objects("company")[0]["id"]
    ann = sandbox.person(email="ann@example.com")["id"]
    assert [(a["fromId"], a["toId"]) for a in sandbox.associations()] == [
        (ann, acme),
        (sandbox.person(userId="u-2")["id"], acme),
    ]
    # A company names its person by Encharge id; the same link seeded again is still one link.
    sandbox.seed(
        associations=[{"objectName": "company", "externalId": "acme", "targetObjectName": "person", "targetId": ann}]
    )
    assert len(sandbox.associations()) == 2
    assert person_fields(sandbox)["tier"]["allowNewEnumValues"] is False
    assert "industry" in {f["name"] for f in company_schema(sandbox)["fields"]}
    missing = requests.post(
        sandbox.url + "/_sandbox/seed",
        timeout=10,
        json={
            "associations": [
                {
                    "objectName": "person",
                    "email": "nobody@example.com",
                    "targetObjectName": "company",
                    "targetExternalId": "acme",
                }
            ]
        },
    )
    assert_envelope(missing, 404, "nobody@example.com")
    assert_envelope(
        requests.post(
            sandbox.url + "/_sandbox/seed",
            timeout=10,
            json={"associations": [{"objectName": "person", "targetObjectName": "company", "colour": "red"}]},
        ),
        400,
        "must not contain",
    )
    sandbox.reset()  # created fields go with the account; the built-in ones stay
    assert "tier" not in person_fields(sandbox) and "email" in person_fields(sandbox)


# --- unsubscribe ------------------------------------------------------------------------------------


def test_a_person_is_unsubscribed_by_email_user_id_or_id_and_the_summary_says_who(sandbox):
    ann, bo, cy = add_people(
        sandbox, {"email": "ann@example.com"}, {"userId": "u-2", "email": "bo@example.com"}, {"email": "cy@example.com"}
    )
    for query in ("email=ANN@example.com", "userId=u-2", f"id={cy['id']}"):
        answer = rest(sandbox, "POST", f"/people/unsubscribe?{query}")
        assert answer.status_code == 204 and answer.content == b"", query
    assert all(p["unsubscribed"] is True for p in sandbox.people())
    add_people(sandbox, {"email": "dee@example.com"})
    summary = sandbox.summary()
    assert "4 people (3 unsubscribed)" in summary
    assert "unsubscribed: ann@example.com, bo@example.com, cy@example.com" in summary
    assert_envelope(rest(sandbox, "POST", "/people/unsubscribe"), 400, "?email=")
    assert_envelope(rest(sandbox, "POST", "/people/unsubscribe?userId=nobody"), 404, "nobody")
    assert "unsubscribed" not in sandbox.person(email="dee@example.com")
    # An upsert may change it back (the target must not send unsubscribed: false unless told to).
    add_people(sandbox, {"email": "ann@example.com", "unsubscribed": False})
    assert sandbox.person(email="ann@example.com")["unsubscribed"] is False
    assert "(2 unsubscribed)" in sandbox.summary()


# --- HTTP --------------------------------------------------------------------------------------------


def test_unknown_paths_and_methods_are_404_and_logged(sandbox):
    assert_envelope(requests.get(sandbox.url + "/nowhere?x=1", timeout=10), 404, "/nowhere")
    assert_envelope(rest(sandbox, "GET", "/tags"), 404)
    assert_envelope(rest(sandbox, "GET", "/nope"), 404)
    assert_envelope(requests.get(sandbox.ingest_url, headers=INGEST, timeout=10), 404)
    logged = sandbox.requests()
    assert [(r["method"], r["path"], r["status"]) for r in logged] == [
        ("GET", "/nowhere", 404),
        ("GET", "/v1/tags", 404),
        ("GET", "/v1/nope", 404),
        ("GET", "/ingest/v1", 404),
    ]
    assert logged[0]["query"] == {"x": "1"}


def test_the_request_log_keeps_what_was_sent(sandbox):
    before = time.time()
    add_people(sandbox, {"email": "ann@example.com"})
    requests.post(sandbox.url + "/hook", data="plain text", headers={"Content-Type": "text/plain"}, timeout=10)
    people_call, hook_call = sandbox.requests()
    assert people_call["method"] == "POST" and people_call["path"] == "/v1/people" and people_call["query"] == {}
    assert people_call["body"] == [{"email": "ann@example.com"}]
    assert people_call["status"] == 200 and people_call["fault"] is None and people_call["auth"] == "api_key"
    assert people_call["headers"]["content-type"] == "application/json"
    assert before <= people_call["time"] <= time.time()
    assert hook_call["body"] == "plain text" and hook_call["auth"] is None and hook_call["status"] == 404


def test_a_second_sandbox_records_what_a_foreign_host_would_receive(sandbox):
    with Sandbox() as foreign:
        requests.post(foreign.url + "/webhook", json={"email": "ann@example.com"}, timeout=10)
        (call,) = foreign.requests()
        assert call["path"] == "/webhook" and call["auth"] is None and "x-encharge-token" not in call["headers"]
    assert sandbox.requests() == []


def test_the_request_log_is_bounded_in_entries_and_body_memory():
    log = RequestLog(max_entries=3, max_body_bytes=100)
    for i in range(5):
        log.add({"status": 200, "body": {"i": i}, "n": i}, "POST /v1/people", 40)
    entries = log.entries()
    assert [e["n"] for e in entries] == [2, 3, 4]
    assert [e["body"] for e in entries] == [None, {"i": 3}, {"i": 4}]
    assert log.counts() == [("POST /v1/people", "200", 5)] and log.total() == 5


def test_keep_alive_and_exact_content_length(sandbox):
    conn = http.client.HTTPConnection("127.0.0.1", int(sandbox.url.rsplit(":", 1)[1]), timeout=10)
    payloads = [
        ("POST", "/v1/people", json.dumps([{"email": "ann@example.com"}])),
        ("POST", "/v1/tags", json.dumps({"tag": "vip", "email": "ann@example.com"})),
        ("DELETE", "/v1/tags", json.dumps({"tag": "vip", "email": "ann@example.com"})),
        ("GET", "/v1/missing", None),
    ]
    sockets = set()
    for method, path, body in payloads:
        conn.request(method, path, body=body, headers={**REST, "Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        sockets.add(id(conn.sock))
        assert answer.getheader("Connection") != "close"
        if answer.status == 204:
            assert data == b"" and answer.getheader("Content-Length") is None
        else:
            assert int(answer.getheader("Content-Length")) == len(data)
    assert len(sockets) == 1, "every request should reuse one connection"
    conn.close()


def test_only_loopback_addresses_are_served():
    for host in ("0.0.0.0", "8.8.8.8", "192.168.1.10"):  # noqa: S104 - each refused
        with pytest.raises(ValueError, match="loopback"):
            Sandbox(host=host)
    with Sandbox(host="localhost") as sb:
        assert rest(sb, "GET", "/accounts/info").status_code == 200


def test_stop_closes_the_server():
    sb = Sandbox().start()
    url = sb.api_url
    session = requests.Session()
    assert session.get(url + "/accounts/info", headers=REST, timeout=5).status_code == 200
    sb.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/accounts/info", headers=REST, timeout=5)
    with pytest.raises(requests.ConnectionError):
        session.get(url + "/accounts/info", headers=REST, timeout=5)


# --- inspection and control --------------------------------------------------------------------------


def test_inspection_endpoints_show_what_arrived(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee"})
    rest(sandbox, "POST", "/tags", {"tag": "vip", "email": "ann@example.com"})
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme", "name": "Acme"}])
    ingest(sandbox, {"name": "Signed up", "user": {"email": "ann@example.com"}, "properties": {"plan": "pro"}})
    rest(sandbox, "GET", "/accounts/info", token="wrong")

    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()
    assert [p["email"] for p in state["people"]] == ["ann@example.com"]
    assert state["people"][0]["tags"] == ["vip"]
    assert [o["externalId"] for o in state["objects"]["company"]] == ["acme"]
    assert state["objects"]["subscription"] == []
    assert [e["name"] for e in state["events"]] == ["Signed up"]
    assert state["requests"]["total"] == 5
    assert {"endpoint": "GET /v1/accounts/info", "status": "401", "count": 1} in state["requests"]["counts"]

    logged = requests.get(sandbox.url + "/_sandbox/requests?limit=2", timeout=10).json()["requests"]
    assert [r["path"] for r in logged] == ["/ingest/v1", "/v1/accounts/info"]

    summary = requests.get(sandbox.url + "/_sandbox/summary", timeout=10)
    assert summary.headers["Content-Type"].startswith("text/plain")
    assert summary.text == sandbox.summary()
    # Inspection requests are not in the log.
    assert len(sandbox.requests()) == 5


def test_summary_is_a_readable_table_of_people_tags_objects_events_and_requests(sandbox):
    add_people(sandbox, {"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee", "plan": "pro"})
    rest(sandbox, "POST", "/tags", {"tag": "vip,beta", "email": "ann@example.com"})
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme", "name": "Acme Inc", "industry": "Software"}])
    ingest(sandbox, {"name": "Upgraded plan", "user": {"email": "ann@example.com"}, "properties": {"plan": "pro"}})
    summary = sandbox.summary()
    assert summary.startswith("Encharge sandbox: 1 people, 2 distinct tags")
    assert re.search(r"ann@example\.com\s+-\s+Ann Lee\s+vip, beta\s+plan=pro", summary)
    assert re.search(r"Custom objects: company \(1\)", summary)
    assert re.search(r"1\s+acme\s+Acme Inc\s+industry=Software", summary)
    assert re.search(r"Upgraded plan\s+ann@example\.com\s+plan=pro", summary)
    assert re.search(r"POST /v1/tags\s+201\s+1", summary)


def test_faults_can_be_set_and_read_over_http(sandbox):
    answer = requests.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 0.5, "rate_limit": 10}, timeout=10)
    assert answer.json()["faults"] == {
        "latency_ms": 0,
        "error_rate": 0.5,
        "drop_rate": 0.0,
        "rate_limit": 10,
        "retry_after": 1,
    }
    assert sandbox.faults["error_rate"] == 0.5
    requests.post(sandbox.url + "/_sandbox/faults", json={"rate_limit": None}, timeout=10)
    assert requests.get(sandbox.url + "/_sandbox/faults", timeout=10).json()["faults"]["rate_limit"] is None
    assert_envelope(requests.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 2}, timeout=10), 400)
    assert_envelope(requests.post(sandbox.url + "/_sandbox/faults", json={"speed": 1}, timeout=10), 400)
    assert sandbox.faults["error_rate"] == 0.5


def test_reset_forgets_the_account_and_log_but_keeps_faults(sandbox):
    add_people(sandbox, {"email": "ann@example.com"})
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}])
    ingest(sandbox, {"name": "Signed up", "user": {"email": "ann@example.com"}})
    sandbox.set_faults(latency_ms=1)
    assert requests.post(sandbox.url + "/_sandbox/reset", timeout=10).status_code == 200
    assert sandbox.people() == [] and sandbox.objects("company") == [] and sandbox.events() == []
    assert sandbox.requests() == [] and "0 API requests" in sandbox.summary()
    assert sandbox.faults["latency_ms"] == 1
    add_people(sandbox, {"email": "bo@example.com"})
    sandbox.reset()
    assert sandbox.people() == [] and sandbox.requests() == []
    assert [o["name"] for o in rest(sandbox, "GET", "/schemas").json()["objects"]] == ["company", "subscription"]


def test_inspection_endpoints_are_not_subject_to_faults(sandbox):
    sandbox.set_faults(error_rate=1.0, drop_rate=0.0, latency_ms=300)
    started = time.monotonic()
    assert requests.get(sandbox.url + "/_sandbox/state", timeout=10).status_code == 200
    assert time.monotonic() - started < 0.25
    sandbox.set_faults(drop_rate=1.0)
    assert requests.get(sandbox.url + "/_sandbox/summary", timeout=10).status_code == 200


def test_state_shows_tags_archived_and_deleted_people_and_objects(sandbox):
    add_people(sandbox, {"email": "ann@example.com"}, {"email": "bo@example.com"}, {"email": "cy@example.com"})
    rest(sandbox, "POST", "/tags", {"tag": "vip,beta", "email": "ann@example.com"})
    rest(sandbox, "DELETE", "/people?people[0][email]=bo@example.com")
    rest(sandbox, "DELETE", "/people?people[0][email]=cy@example.com&force=true")
    rest(sandbox, "POST", "/objects/company", [{"externalId": "acme"}])
    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()
    people = {p["email"]: p for p in state["people"]}
    assert people["ann@example.com"]["tags"] == ["vip", "beta"] and "archived" not in people["ann@example.com"]
    assert people["bo@example.com"]["archived"] is True
    assert [p["email"] for p in state["deletedPeople"]] == ["cy@example.com"]
    assert [o["externalId"] for o in state["objects"]["company"]] == ["acme"]
    assert state["duplicateObjects"] == {} and state["options"] == {"duplicate_objects": False}
    summary = sandbox.summary()
    assert summary.startswith("Encharge sandbox: 2 people (1 archived, 1 deleted), 2 distinct tags")
    assert re.search(r"bo@example\.com.*\[archived\]", summary)
    assert "deleted for good: cy@example.com" in summary


def test_seeding_puts_people_tags_and_objects_in_the_account_without_a_logged_request(sandbox):
    seeded = requests.post(
        sandbox.url + "/_sandbox/seed",
        timeout=10,
        json={
            "people": [{"email": "ann@example.com", "firstName": "Ann"}, {"userId": "u-2"}],
            "tags": [{"tag": "added-by-flow", "email": "ann@example.com"}, {"tag": "a,b", "userId": "u-2"}],
            "objects": {"company": [{"externalId": "acme", "name": "Acme"}]},
        },
    )
    assert seeded.json() == {"seeded": {"people": 2, "tags": 2, "objects": 1}}
    assert sandbox.person(email="ann@example.com")["tags"] == ["added-by-flow"]
    assert sandbox.person(userId="u-2")["tags"] == ["a", "b"]
    assert [o["name"] for o in sandbox.objects("company")] == ["Acme"]
    assert sandbox.requests() == [] and sandbox.write_counts() == {}
    assert sandbox.seed(tags=[{"tag": "from-python", "email": "ann@example.com"}]) == {
        "people": 0,
        "tags": 1,
        "objects": 0,
    }
    assert sandbox.person(email="ann@example.com")["tags"] == ["added-by-flow", "from-python"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"people": [{"firstName": "no identifier"}]}, 400, "body.people[0] needs at least one"),
        ({"tags": [{"tag": "vip"}]}, 400, "body.tags[0] needs at least one"),
        ({"tags": [{"tag": "vip", "email": "nobody@example.com"}]}, 404, "nobody@example.com"),
        ({"objects": {"Company": [{"externalId": "x"}]}}, 404, "case-sensitive"),
        ({"objects": {"company": {"externalId": "x"}}}, 400, "must be array"),
        ({"persons": []}, 400, "body"),
        ([], 400, "body must be object"),
    ],
)
def test_a_seed_that_does_not_fit_the_api_is_refused(sandbox, body, status, says):
    assert_envelope(requests.post(sandbox.url + "/_sandbox/seed", json=body, timeout=10), status, says)
    assert sandbox.objects("company") == []


def test_writes_are_counted_per_endpoint_and_the_log_can_be_cleared_alone(sandbox):
    add_people(sandbox, {"email": "ann@example.com"})
    rest(sandbox, "GET", "/people?people[0][email]=ann@example.com")
    rest(sandbox, "POST", "/tags", {"tag": "vip", "email": "nobody@example.com"})  # refused, still a write
    rest(sandbox, "PUT", "/objects/company", {"externalId": "acme"})
    ingest(sandbox, {"name": "Paid", "user": {"email": "ann@example.com"}})
    expected = {"POST /ingest/v1": 1, "POST /v1/people": 1, "POST /v1/tags": 1, "PUT /v1/objects/{name}": 1}
    assert sandbox.write_counts() == expected
    assert requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()["requests"]["writes"] == expected
    writes = requests.get(sandbox.url + "/_sandbox/requests?writes=true", timeout=10).json()["requests"]
    assert [(r["method"], r["path"]) for r in writes] == [
        ("POST", "/v1/people"),
        ("POST", "/v1/tags"),
        ("PUT", "/v1/objects/company"),
        ("POST", "/ingest/v1"),
    ]
    assert [r["method"] for r in sandbox.requests(limit=2, writes_only=True)] == ["PUT", "POST"]
    # An unchanged rerun is proved by no write after the log is cleared; the account stays.
    assert requests.delete(sandbox.url + "/_sandbox/requests", timeout=10).json() == {"cleared": True}
    assert sandbox.write_counts() == {} and sandbox.requests() == []
    assert sandbox.person(email="ann@example.com") is not None
    rest(sandbox, "GET", "/accounts/info")
    assert sandbox.write_counts() == {} and len(sandbox.requests()) == 1
    sandbox.clear_requests()
    assert sandbox.state()["requests"] == {"total": 0, "counts": [], "writes": {}}


# --- faults ------------------------------------------------------------------------------------------


def test_latency_is_added_to_every_api_answer(sandbox):
    rest(sandbox, "GET", "/accounts/info")
    started = time.monotonic()
    rest(sandbox, "GET", "/accounts/info")
    fast = time.monotonic() - started
    sandbox.set_faults(latency_ms=250)
    for call in (
        lambda: rest(sandbox, "GET", "/accounts/info"),
        lambda: rest(sandbox, "GET", "/unknown"),
        lambda: rest(sandbox, "GET", "/accounts/info", token="wrong"),
    ):
        started = time.monotonic()
        call()
        assert 0.24 <= time.monotonic() - started < 2
    assert fast < 0.2


def test_error_rate_answers_that_share_of_500s_reproducibly_with_a_seed():
    def statuses(seed: int) -> list[int]:
        with Sandbox(error_rate=0.3, seed=seed) as sb:
            session = requests.Session()
            return [
                session.get(sb.api_url + "/accounts/info", headers=REST, timeout=10).status_code for _ in range(300)
            ]

    first, second = statuses(7), statuses(7)
    assert first == second
    assert set(first) == {200, 500}
    assert 60 <= first.count(500) <= 120  # 30% of 300 is 90
    assert statuses(8) != first


def test_a_500_has_the_envelope_and_no_effect_on_the_account(sandbox):
    sandbox.set_faults(error_rate=1.0)
    answer = rest(sandbox, "POST", "/people", [{"email": "ann@example.com"}])
    assert_envelope(answer, 500)
    assert_envelope(ingest(sandbox, {"name": "x", "user": {"email": "ann@example.com"}}), 500)
    assert sandbox.people() == [] and sandbox.events() == []
    assert [(r["status"], r["fault"]) for r in sandbox.requests()] == [(500, "500"), (500, "500")]
    sandbox.set_faults(error_rate=0)
    assert rest(sandbox, "POST", "/people", [{"email": "ann@example.com"}]).status_code == 200


def test_above_the_rate_limit_the_answer_is_429_with_retry_after(sandbox):
    sandbox.set_faults(rate_limit=5, retry_after=3)
    session = requests.Session()
    answers = [
        session.post(sandbox.api_url + "/people", json=[{"email": f"p{i}@example.com"}], headers=REST, timeout=10)
        for i in range(8)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    assert all(a.headers["Retry-After"] == "3" for a in answers[5:])
    assert_envelope(answers[5], 429, "retry")
    assert len(sandbox.people()) == 5
    assert [r["fault"] for r in sandbox.requests()][4:] == [None, "429", "429", "429"]
    time.sleep(1.05)
    assert session.get(sandbox.api_url + "/accounts/info", headers=REST, timeout=10).status_code == 200
    sandbox.set_faults(rate_limit=0)
    assert all(session.get(sandbox.api_url + "/fields", headers=REST, timeout=10).status_code == 200 for _ in range(10))


def test_dropped_connections_raise_connection_error_and_change_nothing(sandbox):
    sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        rest(sandbox, "POST", "/people", [{"email": "ann@example.com"}])
    with pytest.raises(requests.ConnectionError):
        ingest(sandbox, {"name": "x", "user": {"email": "ann@example.com"}})
    assert sandbox.people() == [] and sandbox.events() == []
    assert [(r["status"], r["fault"]) for r in sandbox.requests()] == [(None, "drop"), (None, "drop")]
    assert "dropped" in sandbox.summary()


def test_a_share_of_requests_is_dropped(sandbox):
    with Sandbox(drop_rate=0.5, seed=3) as sb:
        session = requests.Session()
        outcomes = []
        for _ in range(60):
            try:
                outcomes.append(session.get(sb.api_url + "/accounts/info", headers=REST, timeout=10).status_code)
            except requests.ConnectionError:
                outcomes.append("dropped")
        assert 15 <= outcomes.count("dropped") <= 45
        assert outcomes.count(200) == 60 - outcomes.count("dropped")


def test_faults_are_settable_at_start_and_only_given_ones_change():
    with Sandbox(latency_ms=5, error_rate=0.1, drop_rate=0.2, rate_limit=50, retry_after=2) as sb:
        assert sb.faults == {"latency_ms": 5, "error_rate": 0.1, "drop_rate": 0.2, "rate_limit": 50, "retry_after": 2}
        sb.set_faults(error_rate=0.0)
        assert sb.faults == {"latency_ms": 5, "error_rate": 0.0, "drop_rate": 0.2, "rate_limit": 50, "retry_after": 2}
        sb.set_faults(rate_limit=0)
        assert sb.faults["rate_limit"] is None
        with pytest.raises(ValueError):
            sb.set_faults(drop_rate=1.5)
    with pytest.raises(ValueError):
        Sandbox(error_rate=-0.1)


# --- the command ------------------------------------------------------------------------------------


def sandbox_command() -> list[str]:
    exe = shutil.which("target-encharge-sandbox") or str(Path(sys.executable).parent / "target-encharge-sandbox")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "target_encharge.sandbox"]


def test_the_command_serves_until_sigterm_and_prints_a_summary():
    process = subprocess.Popen(
        [
            *sandbox_command(),
            "--port",
            "0",
            "--schemas",
            "company,invoice",
            "--api-key",
            "k1",
            "--write-key",
            "w1",
            "--rate-limit",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        urls = re.findall(r"http://127\.0\.0\.1:\d+\S*", line)
        assert len(urls) >= 2, line
        api_url = next(u for u in urls if u.endswith("/v1") and "ingest" not in u)
        ingest_url = next(u for u in urls if u.endswith("/ingest/v1"))
        base = api_url[: -len("/v1")]
        assert (
            requests.post(
                api_url + "/people", json=[{"email": "cli@example.com"}], headers={"X-Encharge-Token": "k1"}, timeout=10
            ).status_code
            == 200
        )
        assert (
            requests.post(
                ingest_url,
                json={"name": "Ran", "user": {"email": "cli@example.com"}},
                headers={"X-Encharge-Token": "w1"},
                timeout=10,
            ).status_code
            == 200
        )
        assert (
            requests.get(api_url + "/schemas", headers={"X-Encharge-Token": "k1"}, timeout=10).json()["objects"][1][
                "name"
            ]
            == "invoice"
        )
        summary = subprocess.run(
            [*sandbox_command(), "summary", "--url", base], capture_output=True, text=True, timeout=30
        )
        assert summary.returncode == 0, summary.stderr
        assert "cli@example.com" in summary.stdout and "Ran" in summary.stdout
        assert "rate_limit=1000" in summary.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_command_applies_fault_flags():
    process = subprocess.Popen(
        [*sandbox_command(), "--port", "0", "--error-rate", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)
        answer = requests.get(base + "/v1/accounts/info", headers=REST, timeout=10)
        assert answer.status_code == 500
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_command_refuses_non_loopback_hosts_and_reports_a_missing_sandbox():
    refused = subprocess.run(
        [*sandbox_command(), "--host", "0.0.0.0", "--port", "0"],  # noqa: S104 - refused
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "loopback" in refused.stderr
    with Sandbox() as sb:
        free_url = sb.url
    missing = subprocess.run(
        [*sandbox_command(), "summary", "--url", free_url], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 1 and "no sandbox answering" in missing.stderr


def test_the_command_takes_the_account_and_the_duplicate_mode():
    process = subprocess.Popen(
        [*sandbox_command(), "--port", "0", "--account-id", "77", "--account-name", "Acme Ltd", "--duplicate-objects"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)
        info = requests.get(base + "/v1/accounts/info", headers=REST, timeout=10).json()
        assert (info["accountId"], info["name"]) == (77, "Acme Ltd")
        for _ in range(2):
            answer = requests.post(
                base + "/v1/objects/company", json=[{"externalId": "acme"}], headers=REST, timeout=10
            )
            assert answer.status_code == 200
        assert requests.get(base + "/_sandbox/options", timeout=10).json() == {"options": {"duplicate_objects": True}}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_command_takes_the_drop_unknown_fields_policy():
    process = subprocess.Popen(
        [*sandbox_command(), "--port", "0", "--drop-unknown-fields"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)
        answer = requests.post(
            base + "/v1/people", json=[{"email": "a@example.com", "plan": "pro"}], headers=REST, timeout=10
        )
        assert answer.status_code == 200 and "plan" not in answer.json()["users"][0]
        assert requests.get(base + "/_sandbox/field-policy", timeout=10).json() == {
            "fieldPolicy": {"drop_unknown_fields": True}
        }
        summary = subprocess.run(
            [*sandbox_command(), "summary", "--url", base], capture_output=True, text=True, timeout=30
        )
        assert summary.returncode == 0 and "person.plan x1" in summary.stdout
        bad = subprocess.run(
            [*sandbox_command(), "summary", "--url", "file:///etc/passwd"], capture_output=True, text=True, timeout=30
        )
        assert bad.returncode == 2 and "http://" in bad.stderr and "root:" not in bad.stdout
    finally:
        process.terminate()
        process.wait(timeout=10)
