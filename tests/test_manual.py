"""`endpoint: manual`: any Encharge endpoint (or another host) as configured, proven against two sandboxes.

`sandbox` is Encharge (`api_url`); `foreign` is a second sandbox on another port standing in for any other host.
Its request log records every request (unknown paths answer 404) with `auth` saying which key arrived, if any.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Iterator

import pytest
from helpers import PERSON_PROPS, people, record, run_target, sandbox_config, schema

from target_encharge.sandbox import Sandbox

ALL = -1  # max_failures: no limit, so one refused record never stops the others


@pytest.fixture
def foreign() -> Iterator[Sandbox]:
    """Another host: a second sandbox with keys of its own (ours would show there as auth 'wrong')."""
    with Sandbox(api_key="foreign-api-key", write_key="foreign-write-key") as sb:
        yield sb


def calls(sb: Sandbox, method: str | None = None, path: str | None = None) -> list[dict]:
    return [
        r for r in sb.requests() if (method is None or r["method"] == method) and (path is None or r["path"] == path)
    ]


def manual(sb: Sandbox, **stream: object) -> dict:
    """A config routing every stream to `manual` with the given settings (and no failure limit)."""
    return sandbox_config(sb, endpoint="manual", max_failures=ALL, dead_letter_path="@work/dead.jsonl", **stream)


COMPANY = {"externalId": {"type": "string"}, "name": {"type": "string"}, "employees": {"type": "integer"}}


# method and URL


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_each_method_reaches_an_absolute_url_and_get_sends_no_body(sandbox, foreign, method):
    run = run_target(
        manual(sandbox, method=method, url=foreign.url + "/hooks/people"),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com", "plan": "pro"})],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert (call["method"], call["path"], call["status"]) == (method, "/hooks/people", 404)
    if method == "GET":
        assert call["body"] is None and "content-type" not in call["headers"]
    else:
        assert call["body"] == {"email": "a@example.com", "plan": "pro"}
        assert call["headers"]["content-type"] == "application/json"


def test_a_path_relative_to_api_url_patches_a_company_by_external_id(sandbox):
    run = run_target(
        sandbox_config(
            sandbox,
            streams={
                "companies": {"endpoint": "create_custom_object", "object_name": "company"},
                "company_updates": {
                    "endpoint": "manual",
                    "method": "PATCH",
                    "url": "/objects/company/externalId/{externalId}",
                },
            },
        ),
        [
            schema("companies", COMPANY),
            record("companies", {"externalId": "acme", "name": "Acme", "employees": 10}),
            schema("company_updates", COMPANY),
            record("company_updates", {"externalId": "acme", "employees": 120}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (patch,) = calls(sandbox, "PATCH")
    assert patch["path"] == "/v1/objects/company/externalId/acme" and patch["status"] == 200
    assert patch["body"] == {"externalId": "acme", "employees": 120} and patch["auth"] == "api_key"
    (acme,) = sandbox.objects("company")
    assert (acme["name"], acme["employees"]) == ("Acme", 120)


def test_people_are_archived_and_unsubscribed_through_the_query(sandbox):
    run = run_target(
        sandbox_config(
            sandbox,
            streams={
                "churned": {"endpoint": "manual", "method": "DELETE", "url": "/people?people[0][email]={email}"},
                "opt_outs": {"endpoint": "manual", "method": "POST", "url": "/people/unsubscribe?email={email}"},
            },
        ),
        [
            *people(3),
            schema("churned", {"email": {"type": "string"}}),
            record("churned", {"email": "p0@example.com"}),
            schema("opt_outs", {"email": {"type": "string"}}),
            record("opt_outs", {"email": "p1@example.com"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (archive,) = calls(sandbox, "DELETE", "/v1/people")
    assert archive["query"] == {"people[0][email]": "p0@example.com"} and archive["status"] == 204
    (unsubscribe,) = calls(sandbox, "POST", "/v1/people/unsubscribe")
    assert unsubscribe["query"] == {"email": "p1@example.com"} and unsubscribe["status"] == 204
    assert sandbox.person(email="p0@example.com")["archived"] is True
    assert sandbox.person(email="p1@example.com")["unsubscribed"] is True
    assert not sandbox.person(email="p2@example.com").get("archived")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a/../b", "a%2F..%2Fb"),
        ("x?y#z", "x%3Fy%23z"),
        ("...", "..."),
        ("ann@example.com", "ann%40example.com"),
        ("50% off & more", "50%25%20off%20%26%20more"),
    ],
)
def test_placeholder_values_are_percent_encoded_and_never_change_the_path(sandbox, foreign, value, encoded):
    run = run_target(
        manual(sandbox, url=foreign.url + "/things/{key}/notes?ref={key}&x=1"),
        [schema("s", {"key": {"type": "string"}}), record("s", {"key": value})],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert call["path"] == f"/things/{encoded}/notes"
    assert call["query"] == {"ref": value, "x": "1"}


def test_a_dot_segment_in_the_path_is_refused_and_never_sent(sandbox, foreign):
    run = run_target(
        manual(sandbox, url=foreign.url + "/things/{key}/notes?ref={ref}"),
        [
            schema("s", {"key": {"type": "string"}, "ref": {"type": "string"}}),
            record("s", {"key": "..", "ref": "a"}),
            record("s", {"key": ".", "ref": "b"}),
            record("s", {"key": "ok", "ref": ".."}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)  # `..` in the query is only text
    assert call["path"] == "/things/ok/notes" and call["query"] == {"ref": ".."}
    dead = {d["record"]["ref"]: d["reason"] for d in run.file_lines("dead.jsonl") if d["status"] is None}
    assert dead.keys() == {"a", "b"} and all("'.' or '..'" in reason for reason in dead.values())


def test_a_record_missing_a_placeholder_field_is_dead_lettered_and_the_others_still_go(sandbox):
    run = run_target(
        manual(sandbox, method="PATCH", url="/objects/company/externalId/{externalId}"),
        [
            schema("companies", COMPANY),
            record("companies", {"name": "No id"}),
            record("companies", {"externalId": "", "name": "Empty id"}),
            record("companies", {"externalId": "ghost", "name": "Ghost"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert [c["path"] for c in calls(sandbox, "PATCH")] == ["/v1/objects/company/externalId/ghost"]
    dead = {d["record"]["name"]: d for d in run.file_lines("dead.jsonl")}
    assert "URL placeholder(s) externalId" in dead["No id"]["reason"] and dead["No id"]["status"] is None
    assert "URL placeholder(s) externalId" in dead["Empty id"]["reason"]
    assert dead["Ghost"]["status"] == 404  # sent: Encharge has no such company


def test_a_missing_placeholder_field_stops_the_run_only_past_max_failures(sandbox):
    opt_outs = {"endpoint": "manual", "url": "/people/unsubscribe?email={email}"}
    messages = [
        *people(2),
        schema("s", {"email": {"type": "string"}, "name": {"type": "string"}}),
        record("s", {"name": "x"}),
        record("s", {"email": "p1@example.com"}),
    ]
    run = run_target(sandbox_config(sandbox, max_failures=1, streams={"s": opt_outs}), messages)
    assert run.returncode == 0, run.stderr
    assert [c["query"] for c in calls(sandbox, "POST", "/v1/people/unsubscribe")] == [{"email": "p1@example.com"}]
    sandbox.reset()
    run = run_target(sandbox_config(sandbox, streams={"s": opt_outs}), messages)  # max_failures 0: the first stops it
    assert run.returncode == 1 and "max_failures=0" in run.error_line
    assert (
        "Record of stream 's' (no identifiers) failed: refused before sending: no value for the URL "
        "placeholder(s) email" in run.stderr
    )


# content types


def test_json_sends_the_record_as_an_object_with_iso_dates_and_plain_numbers(sandbox, foreign):
    props = {
        "email": {"type": "string"},
        "score": {"type": "number"},
        "createdAt": {"type": "string", "format": "date-time"},
        "tags": {"type": "array"},
    }
    run = run_target(
        manual(sandbox, url=foreign.url + "/hook"),
        [
            schema("s", props),
            record(
                "s", {"email": "a@example.com", "score": 1.25, "tags": ["x"], "createdAt": "2024-03-01T10:00:00+00:00"}
            ),
        ],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert call["body"]["score"] == 1.25 and call["body"]["tags"] == ["x"]
    assert call["body"]["createdAt"].startswith("2024-03-01T10:00:00")


def test_ndjson_sends_one_line_per_record(sandbox, foreign):
    run = run_target(
        manual(
            sandbox,
            url=foreign.url + "/bulk",
            content_type="application/x-ndjson",
            batch_records=True,
            max_concurrency=1,
        ),
        [schema("s", PERSON_PROPS), *(record("s", {"email": f"n{i}@example.com", "score": i}) for i in range(3))],
    )
    assert run.returncode == 0, run.stderr
    first = calls(foreign)[0]  # the whole batch; the 404 then splits it to find the records at fault
    assert first["headers"]["content-type"] == "application/x-ndjson"
    assert first["body"] == "".join(f'{{"email":"n{i}@example.com","score":{i}}}\n' for i in range(3))


def test_form_encoding_sends_one_record_as_fields(sandbox, foreign):
    props = {
        "email": {"type": "string"},
        "score": {"type": "number"},
        "vip": {"type": "boolean"},
        "createdAt": {"type": "string", "format": "date-time"},
        "tags": {"type": "array"},
        "note": {"type": ["string", "null"]},
    }
    run = run_target(
        manual(sandbox, url=foreign.url + "/form", content_type="application/x-www-form-urlencoded"),
        [
            schema("s", props),
            record(
                "s",
                {
                    "email": "a+b@example.com",
                    "score": 1.5,
                    "vip": True,
                    "note": None,
                    "tags": ["x", "y"],
                    "createdAt": "2024-03-01T10:00:00+00:00",
                },
            ),
        ],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert call["headers"]["content-type"] == "application/x-www-form-urlencoded"
    fields = dict(urllib.parse.parse_qsl(call["body"]))
    assert fields == {
        "email": "a+b@example.com",
        "score": "1.5",
        "vip": "true",
        "tags": '["x","y"]',
        "createdAt": fields["createdAt"],
    }
    assert fields["createdAt"].startswith("2024-03-01T10:00:00")  # no JSON quotes around it


@pytest.mark.parametrize("where", ["top", "stream"])
def test_form_encoding_with_batch_records_is_refused_at_start_up(sandbox, foreign, where):
    form = {
        "endpoint": "manual",
        "url": foreign.url + "/form",
        "batch_records": True,
        "content_type": "application/x-www-form-urlencoded",
    }
    config = sandbox_config(sandbox, **form) if where == "top" else sandbox_config(sandbox, streams={"s": form})
    run = run_target(config, [*people(2)])
    assert run.returncode == 1
    assert run.error_line.startswith("target-encharge: error:") and "batch_records" in run.error_line
    assert "Traceback" not in run.stderr
    assert not sandbox.requests() and not foreign.requests()


# headers


@pytest.mark.parametrize("headers", ["X-Source: crm , X-Run:42", {"X-Source": "crm", "X-Run": "42"}])
def test_request_headers_reach_the_server(sandbox, foreign, headers):
    run = run_target(
        manual(sandbox, url=foreign.url + "/hook", request_headers=headers),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com"})],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert call["headers"]["x-source"] == "crm" and call["headers"]["x-run"] == "42"


@pytest.mark.parametrize(
    "headers",
    [
        "X-Source:crm\r\nX-Injected: 1",
        "X-Source:crm\n",
        {"X-Source": "crm\rX-Injected: 1"},
        {"X-Bad\nName": "v"},
        "no-colon-here",
    ],
)
def test_bad_request_headers_are_refused_at_start_up(sandbox, foreign, headers):
    run = run_target(
        sandbox_config(
            sandbox, streams={"s": {"endpoint": "manual", "url": foreign.url + "/hook", "request_headers": headers}}
        ),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com"})],
    )
    assert run.returncode == 1
    assert "request_headers" in run.error_line and "Traceback" not in run.stderr
    assert not sandbox.requests() and not foreign.requests()


def test_excluded_attributes_are_never_sent(sandbox, foreign):
    run = run_target(
        manual(sandbox, url=foreign.url + "/hook", exclude_attributes=["plan", "score"]),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com", "plan": "pro", "score": 2})],
    )
    assert run.returncode == 0, run.stderr
    (call,) = calls(foreign)
    assert call["body"] == {"email": "a@example.com"}


# batching


def batches(sandbox: Sandbox, method: str = "POST", path: str = "/v1/people") -> list[list[str]]:
    return [[p["email"] for p in c["body"]] for c in calls(sandbox, method, path)]


def test_sequential_batches_are_exactly_batch_size_in_arrival_order(sandbox):
    run = run_target(manual(sandbox, url="/people", batch_records=True, batch_size=3, max_concurrency=1), people(8))
    assert run.returncode == 0, run.stderr
    emails = [f"p{i}@example.com" for i in range(8)]
    assert batches(sandbox) == [emails[0:3], emails[3:6], emails[6:8]]
    assert len(sandbox.people()) == 8


def test_by_field_batches_only_hold_records_with_the_same_value(sandbox):
    plans = ["free", "pro", "free", "pro", "free", "team", "free", "pro"]
    run = run_target(
        manual(
            sandbox, url="/people", batch_records=True, batch_size=2, grouping_algorithm="by_field", group_by="plan"
        ),
        [schema("s", PERSON_PROPS)]
        + [record("s", {"email": f"p{i}@example.com", "plan": plan}) for i, plan in enumerate(plans)],
    )
    assert run.returncode == 0, run.stderr
    sent = [c["body"] for c in calls(sandbox, "POST", "/v1/people")]
    assert all(len({p["plan"] for p in body}) == 1 for body in sent)
    by_plan = sorted((body[0]["plan"], [p["email"] for p in body]) for body in sent)
    assert by_plan == [
        ("free", ["p0@example.com", "p2@example.com"]),
        ("free", ["p4@example.com", "p6@example.com"]),
        ("pro", ["p1@example.com", "p3@example.com"]),
        ("pro", ["p7@example.com"]),
        ("team", ["p5@example.com"]),
    ]


def test_records_whose_urls_differ_never_share_a_call(sandbox):
    objects = ["company", "company", "subscription", "company", "subscription", "subscription"]
    run = run_target(
        manual(
            sandbox,
            url="/objects/{kind}",
            batch_records=True,
            batch_size=10,
            grouping_algorithm="by_field",
            group_by="region",
            exclude_attributes=[],
        ),
        [schema("s", {"kind": {"type": "string"}, "externalId": {"type": "string"}, "region": {"type": "string"}})]
        + [record("s", {"kind": kind, "externalId": f"o{i}", "region": "eu"}) for i, kind in enumerate(objects)],
    )
    assert run.returncode == 0, run.stderr
    sent = {c["path"]: [o["externalId"] for o in c["body"]] for c in calls(sandbox, "POST")}
    assert sent == {"/v1/objects/company": ["o0", "o1", "o3"], "/v1/objects/subscription": ["o2", "o4", "o5"]}
    assert len(calls(sandbox, "POST")) == 2


def test_sequential_batching_with_changing_urls_keeps_arrival_order(sandbox):
    objects = ["company", "company", "subscription", "company"]
    run = run_target(
        manual(sandbox, url="/objects/{kind}", batch_records=True, batch_size=10, max_concurrency=1),
        [schema("s", {"kind": {"type": "string"}, "externalId": {"type": "string"}})]
        + [record("s", {"kind": kind, "externalId": f"o{i}"}) for i, kind in enumerate(objects)],
    )
    assert run.returncode == 0, run.stderr
    sent = [(c["path"], [o["externalId"] for o in c["body"]]) for c in calls(sandbox, "POST")]
    assert sent == [
        ("/v1/objects/company", ["o0", "o1"]),
        ("/v1/objects/subscription", ["o2"]),
        ("/v1/objects/company", ["o3"]),
    ]


def test_by_field_keeps_input_order_for_the_same_person_across_groups(sandbox):
    run = run_target(
        manual(
            sandbox, url="/people", batch_records=True, batch_size=2, grouping_algorithm="by_field", group_by="plan"
        ),
        [
            schema("s", PERSON_PROPS),
            record("s", {"email": "ann@example.com", "plan": "free"}),
            record("s", {"email": "ann@example.com", "plan": "pro"}),
            record("s", {"email": "bob@example.com", "plan": "pro"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="ann@example.com")["plan"] == "pro"
    assert batches(sandbox) == [["ann@example.com"], ["ann@example.com", "bob@example.com"]]


# the token stays on Encharge's hosts


def test_the_token_never_reaches_another_host(sandbox, foreign):
    run = run_target(
        sandbox_config(
            sandbox,
            max_failures=ALL,
            streams={
                "elsewhere": {"endpoint": "manual", "url": foreign.url + "/v1/people/{email}"},
                "fixed": {"endpoint": "manual", "url": foreign.url + "/v1/people", "batch_records": True},
                "encharge": {"endpoint": "manual", "url": "/people", "batch_records": True},
            },
        ),
        [
            schema("elsewhere", PERSON_PROPS),
            record("elsewhere", {"email": "a@example.com"}),
            schema("fixed", PERSON_PROPS),
            record("fixed", {"email": "b@example.com"}),
            schema("encharge", PERSON_PROPS),
            record("encharge", {"email": "c@example.com"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    arrived = calls(foreign)
    assert sorted(c["path"] for c in arrived) == ["/v1/people", "/v1/people/a%40example.com"]
    for call in arrived:
        assert call["auth"] is None and "x-encharge-token" not in call["headers"]
    # the other host wanted a key (401) or knows no such path (404): the record fails, the run goes on
    assert sorted(c["status"] for c in arrived) == [401, 404]
    (mine,) = calls(sandbox, "POST", "/v1/people")
    assert mine["auth"] == "api_key"


def test_a_foreign_host_refusing_the_call_does_not_blame_the_encharge_key(sandbox, foreign):
    run = run_target(
        manual(sandbox, url=foreign.url + "/v1/people", batch_records=True),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com"})],
    )
    assert run.returncode == 0, run.stderr
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["status"] == 401 and "api_key" not in run.stderr


@pytest.mark.parametrize("url", ["http://example.com/hook", "http://10.0.0.1/hook", "ftp://example.com/x"])
def test_plain_http_to_another_host_is_refused_at_start_up(sandbox, url):
    run = run_target(sandbox_config(sandbox, streams={"s": {"endpoint": "manual", "url": url}}), people(1))
    assert run.returncode == 1
    assert "https" in run.error_line and "Traceback" not in run.stderr
    assert not sandbox.requests()


def test_a_redirect_from_encharge_to_another_host_drops_the_token(sandbox, foreign):
    away = urllib.parse.quote(foreign.url + "/landing", safe="")
    home = urllib.parse.quote(sandbox.api_url + "/people", safe="")
    run = run_target(
        sandbox_config(
            sandbox,
            max_failures=ALL,
            batch_records=True,
            streams={
                "away": {"endpoint": "manual", "url": f"{sandbox.url}/_sandbox/redirect?to={away}"},
                "home": {"endpoint": "manual", "url": f"{sandbox.url}/_sandbox/redirect?to={home}"},
            },
        ),
        [
            schema("away", PERSON_PROPS),
            record("away", {"email": "a@example.com"}),
            schema("home", PERSON_PROPS),
            record("home", {"email": "h@example.com"}),
        ],
    )
    assert run.returncode == 0, run.stderr
    (landed,) = calls(foreign)
    assert landed["path"] == "/landing" and landed["method"] == "POST"
    assert landed["auth"] is None and "x-encharge-token" not in landed["headers"]
    (home_call,) = calls(sandbox, "POST", "/v1/people")  # the same redirect within Encharge keeps the token
    assert home_call["auth"] == "api_key" and sandbox.person(email="h@example.com")


# delivery works as for the templates


def test_an_unknown_path_is_dead_lettered_with_its_status(sandbox):
    run = run_target(
        manual(sandbox, url="/no/such/endpoint/{email}"),
        [schema("s", PERSON_PROPS), record("s", {"email": "a@example.com"})],
    )
    assert run.returncode == 0, run.stderr
    (dead,) = run.file_lines("dead.jsonl")
    assert dead["status"] == 404 and dead["record"] == {"email": "a@example.com"}
    assert dead["identifiers"]["email"] == "a@example.com"
    assert "Cannot POST /v1/no/such/endpoint" in dead["reason"]


def test_server_errors_on_a_manual_call_are_retried_until_delivered(sandbox):
    sandbox.set_faults(error_rate=0.5, drop_rate=0.1)
    run = run_target(manual(sandbox, url="/people", batch_records=True, batch_size=5, max_retries=20), people(20))
    assert run.returncode == 0, run.stderr
    assert len(sandbox.people()) == 20
    assert any(c["fault"] for c in calls(sandbox, "POST", "/v1/people"))
    assert not run.file_lines("dead.jsonl")


def test_dry_run_shows_the_manual_request_without_the_token(sandbox, foreign):
    run = run_target(
        sandbox_config(
            sandbox,
            dry_run=True,
            endpoint="manual",
            method="PATCH",
            url="/objects/company/externalId/{externalId}",
            request_headers="X-Source:crm",
        ),
        [schema("s", COMPANY), record("s", {"externalId": "a b", "name": "Acme"})],
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""  # previews go to stderr: stdout carries only Singer messages
    (preview,) = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert preview["method"] == "PATCH" and preview["url"] == sandbox.api_url + "/objects/company/externalId/a%20b"
    assert preview["headers"]["X-Encharge-Token"] == "***" and preview["headers"]["X-Source"] == "crm"
    assert preview["body"] == {"externalId": "a b", "name": "Acme"}
    assert not sandbox.requests() and not foreign.requests()
