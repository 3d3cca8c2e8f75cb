"""Record-to-request building, for every template and the manual sink, against arbitrary records (hypothesis).

Whatever a tap sends (any field names, unicode, nesting, nulls, huge strings, the datetimes and Decimals the
SDK makes of them), building the request never crashes: a record is either refused with a reason or becomes a
request that carries it faithfully, keeps its identifiers, never carries an excluded field, and whose URL keeps
its structure whatever the placeholder values are.

How many examples each property tries is the hypothesis profile's (tests/conftest.py: few in development, more in CI).
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import json
import urllib.parse
from pathlib import Path

import msgspec
import pytest
import requests
from helpers import run_target, sandbox_config, schema
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from target_encharge.settings import resolve
from target_encharge.target import TargetEncharge
from target_encharge.templates import PERSON_IDS, template_for

API = "https://api.encharge.io/v1"
INGEST = "https://ingest.encharge.io/v1"

# --- what taps send --------------------------------------------------------------------------------------------

SPECIAL_KEYS = [
    "email",
    "userId",
    "id",
    "tag",
    "name",
    "user",
    "properties",
    "sourceIp",
    "externalId",
    "",
    " ",
    "__proto__",
    "{id}",
    "a.b",
    "a/b?c=d#e",
    "ключ",
    "🙂",
    "null",
    "emaIl",
    "EMAIL",
]
keys = st.one_of(st.sampled_from(SPECIAL_KEYS), st.text(max_size=12))
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m)))
datetimes = st.datetimes(timezones=st.one_of(st.none(), st.just(datetime.timezone.utc), offsets))
huge_strings = st.builds(
    lambda c, n: c * n, st.sampled_from(["x", "é", "漢", "🙂", "\n", '"', "\\", "%"]), st.integers(20_000, 150_000)
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    datetimes,
    st.dates(),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=10
)
# identifiers and the fields templates look at, present often, in every shape
id_values = st.one_of(st.emails(), st.text(max_size=20), st.integers(), st.none(), st.just(""), values)
lookouts = st.fixed_dictionaries(
    {},
    optional={
        "email": id_values,
        "userId": id_values,
        "id": id_values,
        "externalId": id_values,
        "tag": st.one_of(
            st.text(max_size=20), st.lists(st.one_of(st.text(max_size=8), st.none(), st.integers()), max_size=4), values
        ),
        "name": st.one_of(st.sampled_from(["identify", "Signed up", "", "  "]), st.text(max_size=20), values),
        "user": st.one_of(st.dictionaries(st.sampled_from([*PERSON_IDS, "plan"]), id_values, max_size=3), values),
        "properties": st.one_of(st.dictionaries(keys, values, max_size=3), values),
        "sourceIp": st.one_of(st.ip_addresses().map(str), values),
    },
)
records = st.builds(
    lambda base, look, big: {**base, **look, **big},
    st.dictionaries(keys, values, max_size=6),
    lookouts,
    st.dictionaries(keys, huge_strings, max_size=1) | st.just({}),
)

TEMPLATES = {
    "person": {"endpoint": "create_or_update_person"},
    "person, batched": {"endpoint": "create_or_update_person", "batch_records": True},
    "add tag": {"endpoint": "add_tag"},
    "remove tag": {"endpoint": "remove_tag"},
    "custom object": {"endpoint": "create_custom_object", "object_name": "company", "batch_records": True},
    "event": {"endpoint": "track_event"},
    "manual JSON": {"endpoint": "manual", "method": "PUT", "url": "/things/{id}?email={email}"},
    "manual JSON, batched": {"endpoint": "manual", "url": "https://hooks.example.com/in", "batch_records": True},
    "manual NDJSON": {
        "endpoint": "manual",
        "url": "/bulk",
        "content_type": "application/x-ndjson",
        "batch_records": True,
    },
    "manual form": {
        "endpoint": "manual",
        "url": "/form/{externalId}",
        "content_type": "application/x-www-form-urlencoded",
    },
    "manual GET": {"endpoint": "manual", "method": "GET", "url": "/people?people[0][email]={email}"},
}


def template(name: str):
    return template_for(resolve(TEMPLATES[name], "s"), API, INGEST)


# --- what was sent, compared with what came in -------------------------------------------------------------------

_decode = msgspec.json.Decoder(float_hook=decimal.Decimal).decode


def same(sent, original) -> bool:
    """``sent`` (decoded from the request) is ``original`` as JSON: dates as ISO 8601, numbers as numbers."""
    if isinstance(original, datetime.datetime):
        if not isinstance(sent, str):
            return False
        parsed = datetime.datetime.fromisoformat(sent)
        return parsed == original and (parsed.tzinfo is None) == (original.tzinfo is None)
    if isinstance(original, datetime.date):
        return sent == original.isoformat()
    if isinstance(original, bool) or original is None:
        return sent is original
    if isinstance(original, (int, decimal.Decimal)):
        return not isinstance(sent, bool) and isinstance(sent, (int, decimal.Decimal)) and sent == original
    if isinstance(original, list):
        return isinstance(sent, list) and len(sent) == len(original) and all(map(same, sent, original))
    if isinstance(original, dict):
        return (
            isinstance(sent, dict)
            and sent.keys() == original.keys()
            and all(same(sent[k], v) for k, v in original.items())
        )
    return sent == original


def present(value) -> bool:
    return value not in (None, "")


def check_request(name: str, record: dict):
    """Build the request for ``record`` as the sink does; returns (template, url, body) or None if refused."""
    tpl = template(name)
    reason = tpl.needs(record, tpl.identifiers(record))
    if reason is not None:
        assert isinstance(reason, str) and reason
        return None
    url = tpl.url(record)
    assert url.startswith((API + "/", INGEST, "https://hooks.example.com/"))
    body = tpl.body([record])
    assert isinstance(tpl.identifiers(record), dict)
    if tpl.batchable:
        assert isinstance(tpl.body([record, record]), bytes)
    return tpl, url, body


# --- the properties ----------------------------------------------------------------------------------------------


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_any_record_is_refused_with_a_reason_or_becomes_a_request(name, record):
    check_request(name, record)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
@pytest.mark.parametrize("name", ["person", "person, batched", "custom object"])
def test_people_and_objects_are_sent_whole_with_their_identifiers(name, record):
    built = check_request(name, record)
    if built is None:
        assert name != "custom object"
        key = record.get("id")  # a number in id is a database key, refused (issue 24); else no identifier at all
        numeric_id = isinstance(key, (int, float, decimal.Decimal)) and not isinstance(key, bool)
        assert numeric_id or not any(present(record.get(k)) for k in PERSON_IDS)
        return
    tpl, _, body = built
    (sent,) = _decode(body)
    assert same(sent, record)
    if name != "custom object":  # Encharge matches a person by a top-level email, userId or id
        assert any(present(sent.get(k)) for k in PERSON_IDS)
    for key, value in tpl.identifiers(record).items():
        assert same(sent[key], value)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
@pytest.mark.parametrize("name", ["add tag", "remove tag"])
def test_tags_carry_the_tag_and_the_persons_identifiers(name, record):
    built = check_request(name, record)
    if built is None:
        return
    tpl, _, body = built
    sent = _decode(body)
    assert present(sent.pop("tag"))
    assert sent and set(sent) <= set(PERSON_IDS)
    assert all(same(sent[k], record[k]) for k in sent)
    assert sent.keys() == tpl.identifiers(record).keys()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_events_carry_every_field_in_user_or_properties_and_the_identifiers_in_user(record):
    built = check_request("event", record)
    if built is None:
        return
    tpl, url, body = built
    assert url == INGEST
    sent = _decode(body)
    assert set(sent) <= {"name", "user", "properties", "sourceIp"}
    assert sent["name"] == record["name"]
    user, properties = sent["user"], sent.get("properties", {})
    assert isinstance(user, dict) and isinstance(properties, dict)
    assert present(user.get("email")) or present(user.get("userId"))
    # the identifiers the target logs, orders and dead-letters by are the ones Encharge receives
    ids = tpl.identifiers(record)
    assert ids.keys() == {k for k in PERSON_IDS if present(user.get(k))}
    assert all(same(user[k], v) for k, v in ids.items())
    home = user if record["name"] == "identify" else properties
    for key, value in record.items():
        if key in ("name", "user", "properties", "sourceIp"):
            continue
        if key in PERSON_IDS:
            if present(value):
                assert key in user
            continue
        assert same(home[key], value)
    if isinstance(record.get("user"), dict):
        for key, value in record["user"].items():
            if key not in PERSON_IDS and (record["name"] != "identify" or key not in record):
                assert same(user[key], value)


# each example draws up to four records, and two in three lack a field the URL needs: a quarter of the examples
@settings(
    max_examples=max(settings.default.max_examples // 4, 5), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(batch=st.lists(records, min_size=1, max_size=4))
@pytest.mark.parametrize("name", ["manual JSON", "manual JSON, batched", "manual NDJSON", "manual form"])
def test_the_manual_body_is_the_record_in_the_configured_encoding(name, batch):
    tpl = template(name)
    batch = [r for r in batch if tpl.needs(r, tpl.identifiers(r)) is None]
    assume(batch)
    if not tpl.batchable:
        batch = batch[:1]
    body = tpl.body(batch)
    if name == "manual NDJSON":
        lines = body.decode().split("\n")
        assert lines[-1] == "" and len(lines) == len(batch) + 1
        assert all(same(_decode(line), r) for line, r in zip(lines, batch, strict=False))
    elif name == "manual form":
        (record,) = batch
        fields = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        assert [k for k, _ in fields] == [k for k, v in record.items() if v is not None]
        for (_, text), value in zip(fields, [v for v in record.values() if v is not None], strict=False):
            if isinstance(value, str):
                assert text == value
            elif isinstance(value, (datetime.date, datetime.datetime)):
                assert same(text, value)
            else:
                assert same(_decode(text), value)
    elif TEMPLATES[name].get("batch_records"):
        assert same(_decode(body), batch)
    else:
        assert same(_decode(body), batch[0])


# --- URL placeholders ----------------------------------------------------------------------------------------------

nasty_segments = st.sampled_from(
    [
        ".",
        "..",
        "../..",
        "a/../../b",
        "/",
        "?",
        "#",
        "&",
        "=",
        "%",
        "%2F",
        "%00",
        " ",
        "+",
        "@evil.example.com",
        "\\",
        "..;/",
        "%2e%2e",
        "\r\nX-Evil: 1",
        "ü/ñ",
    ]
)
placeholder_values = st.one_of(
    st.text(min_size=1, max_size=30),
    nasty_segments,
    st.integers(),
    st.decimals(allow_nan=False, allow_infinity=False),
    datetimes,
    st.lists(st.text(max_size=5), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=1, max_size=2),
)


@settings(deadline=None)
@given(thing=placeholder_values, email=placeholder_values)
def test_placeholder_values_never_change_the_url_structure(thing, email):
    tpl = template("manual JSON")  # PUT /things/{id}?email={email}
    record = {"id": thing, "email": email}
    assume(tpl.needs(record, tpl.identifiers(record)) is None)
    url = tpl.url(record)
    # what requests (and so the network) makes of it, not just the string we built
    prepared = urllib.parse.urlsplit(requests.Request("PUT", url).prepare().url)
    assert (prepared.scheme, prepared.netloc) == ("https", "api.encharge.io")
    assert prepared.fragment == ""
    segments = prepared.path.split("/")
    assert segments[:3] == ["", "v1", "things"] and len(segments) == 4
    assert urllib.parse.parse_qsl(prepared.query, keep_blank_values=True)[0][0] == "email"
    assert len(urllib.parse.parse_qsl(prepared.query, keep_blank_values=True)) == 1
    if isinstance(thing, str):
        assert urllib.parse.unquote(segments[3]) == thing
    if isinstance(email, str):
        assert urllib.parse.parse_qsl(prepared.query, keep_blank_values=True)[0][1] == email


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # one run each: no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ids=st.lists(st.one_of(nasty_segments, st.text(min_size=1, max_size=30)), min_size=15, max_size=15, unique=True))
def test_placeholder_values_reach_encharge_as_one_path_segment(sandbox, ids):
    sandbox.reset()
    ids = [i for i in ids if i.strip()] or ["x"]
    run = run_target(
        sandbox_config(
            sandbox,
            endpoint="manual",
            method="PATCH",
            url="/objects/company/externalId/{externalId}",
            max_failures=-1,
            dead_letter_path="@work/dead.jsonl",
            request_timeout=60,
        ),
        [
            schema("updates", {"externalId": {"type": "string"}, "name": {"type": "string"}}),
            *({"type": "RECORD", "stream": "updates", "record": {"externalId": i, "name": "n"}} for i in ids),
        ],
    )
    assert run.returncode == 0, run.stderr
    paths = [r["path"] for r in sandbox.requests() if r["method"] == "PATCH"]
    prefix = "/v1/objects/company/externalId/"
    assert all(p.startswith(prefix) and "/" not in p[len(prefix) :] for p in paths)
    # `.` and `..` cannot be escaped out of a path's meaning: they are refused, never sent
    assert {urllib.parse.unquote(p[len(prefix) :]) for p in paths} == {i for i in ids if i not in (".", "..")}
    refused = [d["record"]["externalId"] for d in run.file_lines("dead.jsonl") if d["status"] is None]
    assert sorted(refused) == sorted(i for i in ids if i in (".", ".."))


# --- excluded attributes, through the sink -------------------------------------------------------------------------

SECRET_FIELD_VALUE = "EXCLUDED-VALUE-7c1e"


def _dry_run_calls(config: dict, stream: str, schema_props: dict, batch: list[dict], workdir: Path) -> str:
    """Everything a dry run of these records writes (previews, dead letters, logs), in-process."""
    config = {
        "api_key": "k" * 12,
        "write_key": "w" * 12,
        "dry_run": True,
        "max_failures": -1,
        "dead_letter_path": str(workdir / "dead.jsonl"),
        "preview_path": str(workdir / "preview.jsonl"),
        **config,
    }
    lines = [
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": stream,
                "key_properties": [],
                "schema": {"type": "object", "properties": schema_props},
            }
        )
    ]
    lines += [json.dumps({"type": "RECORD", "stream": stream, "record": r}) for r in batch]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        target = TargetEncharge(config=config, validate_config=True)
        target.listen(io.StringIO("\n".join(lines) + "\n"))
    written = out.getvalue()
    for name in ("dead.jsonl", "preview.jsonl"):
        if (workdir / name).exists():
            written += (workdir / name).read_text()
            (workdir / name).unlink()
    return written


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(list(TEMPLATES)),
    excluded=st.lists(
        st.one_of(st.sampled_from(SPECIAL_KEYS), st.text(min_size=1, max_size=8)), min_size=1, max_size=4, unique=True
    ),
    batch=st.lists(st.dictionaries(keys, json_values, max_size=6), min_size=1, max_size=5),
)
def test_excluded_attributes_are_never_sent_nor_written(tmp_path_factory, name, excluded, batch):
    workdir = tmp_path_factory.mktemp("dry")
    people = [
        {"email": f"p{i}@example.com", "name": "Signed up", "tag": "vip", "id": f"id{i}", "externalId": f"x{i}", **r}
        for i, r in enumerate(batch)
    ]
    for person in people:  # every excluded field is there, with a value that must never be seen
        person.update({field: SECRET_FIELD_VALUE for field in excluded})
    written = _dry_run_calls(
        {**TEMPLATES[name], "exclude_attributes": excluded, "object_name": "company"}, "s", {}, people, workdir
    )
    assert SECRET_FIELD_VALUE not in written
    assert written  # the dry run showed something: a preview or a dead letter for each record
