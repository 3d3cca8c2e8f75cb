"""target-encharge as a Meltano loader: settings from environment variables, the SDK's stream maps and record
validation in front of our sinks, and real `meltano install` + `meltano run` from meltano.yml into the sandbox,
with Meltano's saved state exactly the tap's."""

from __future__ import annotations

import json
import os
import subprocess
import typing as t

from helpers import API_KEY, PERSON_PROPS, WRITE_KEY, record, run_target, sandbox_config, schema, state, target_command


def run_with_env(env: dict[str, str], messages: list[dict]) -> subprocess.CompletedProcess:
    """The target with `--config ENV`: every setting from TARGET_ENCHARGE_* variables, as a shell passes them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_ENCHARGE_")}
    return subprocess.run([*target_command(), "--config", "ENV"], input="".join(json.dumps(m) + "\n" for m in messages),
                          capture_output=True, text=True, env={**clean, **env}, timeout=120, check=False)


def sandbox_env(sandbox: t.Any, **settings: str) -> dict[str, str]:  # noqa: ANN401
    return {"TARGET_ENCHARGE_API_KEY": API_KEY, "TARGET_ENCHARGE_WRITE_KEY": WRITE_KEY,
            "TARGET_ENCHARGE_API_URL": sandbox.api_url, "TARGET_ENCHARGE_INGEST_URL": sandbox.ingest_url,
            **{f"TARGET_ENCHARGE_{k.upper()}": v for k, v in settings.items()}}


TAG_PROPS = {"email": {"type": "string"}, "tag": {"type": "string"}}


def test_every_kind_of_setting_comes_from_environment_variables(sandbox):
    env = sandbox_env(
        sandbox,
        streams=json.dumps({"user_tags": {"endpoint": "add_tag", "request_headers": {"X-Stream": "tags"}}}),
        exclude_attributes='["internalNote"]',
        request_headers='{"X-Source": "warehouse"}',
        request_timeout="5",
        retry_backoff="0.01",
        max_requests_per_second="50",
        max_retries="2",
        batch_records="true",
    )
    run = run_with_env(env, [
        schema("people", {**PERSON_PROPS, "internalNote": {"type": "string"}}, ["email"]),
        record("people", {"email": "ann@example.com", "firstName": "Ann", "internalNote": "do not send"}),
        schema("user_tags", TAG_PROPS),
        record("user_tags", {"email": "ann@example.com", "tag": "vip"}),
        state({"bookmarks": {"people": {"n": 1}}}),
    ])
    assert run.returncode == 0, run.stderr
    ann = sandbox.person(email="ann@example.com")
    assert ann["firstName"] == "Ann" and ann["tags"] == ["vip"]
    assert "internalNote" not in ann
    by_path = {r["path"]: r for r in sandbox.requests() if r["method"] == "POST"}
    assert by_path["/v1/people"]["headers"]["x-source"] == "warehouse"
    assert by_path["/v1/tags"]["headers"]["x-stream"] == "tags"
    assert [json.loads(line) for line in run.stdout.splitlines()] == [{"bookmarks": {"people": {"n": 1}}}]
    assert API_KEY not in run.stderr and WRITE_KEY not in run.stderr


def test_headers_as_text_from_an_environment_variable(sandbox):
    run = run_with_env(sandbox_env(sandbox, request_headers="X-Source:warehouse,X-Team:growth"),
                       [schema("people", PERSON_PROPS, ["email"]), record("people", {"email": "ann@example.com"})])
    assert run.returncode == 0, run.stderr
    headers = next(r for r in sandbox.requests() if r["path"] == "/v1/people")["headers"]
    assert (headers["x-source"], headers["x-team"]) == ("warehouse", "growth")


def test_a_bad_number_or_json_in_an_environment_variable_is_one_clear_line(sandbox):
    for name, value, says in (("request_timeout", "soon", "TARGET_ENCHARGE_REQUEST_TIMEOUT: 'soon' is not a number"),
                              ("streams", "{tags: add_tag}", "is not valid JSON")):
        run = run_with_env(sandbox_env(sandbox, **{name: value}), [schema("people", PERSON_PROPS, ["email"])])
        assert run.returncode == 1
        assert says in run.stderr.splitlines()[-1], run.stderr
        assert "Traceback" not in run.stderr
    assert sandbox.requests() == []


# The SDK's stream maps and record validation run before our sinks: what Encharge receives is the mapped record.

def test_a_stream_map_renames_and_drops_fields_before_they_reach_encharge(sandbox):
    maps = {"people": {"first_name": "firstName", "firstName": "__NULL__", "plan": "__NULL__",
                       "email": "email.lower()"}}
    run = run_target(sandbox_config(sandbox, stream_maps=maps), [
        schema("people", PERSON_PROPS, ["email"]),
        record("people", {"email": "Ann@Example.com", "firstName": "Ann", "plan": "pro"}),
    ])
    assert run.returncode == 0, run.stderr
    [sent] = next(r for r in sandbox.requests() if r["path"] == "/v1/people")["body"]
    assert sent["email"] == "ann@example.com" and sent["first_name"] == "Ann"
    assert "firstName" not in sent and "plan" not in sent


def test_a_stream_map_can_route_a_copy_of_a_stream_to_another_endpoint(sandbox):
    maps = {"signups": {"__source__": "people", "email": "email", "tag": "'signed-up'", "__else__": "__NULL__"}}
    config = sandbox_config(sandbox, stream_maps=maps, streams={"signups": {"endpoint": "add_tag"}})
    run = run_target(config, [schema("people", PERSON_PROPS, ["email"]),
                              record("people", {"email": "ann@example.com", "firstName": "Ann"})])
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="ann@example.com")["tags"] == ["signed-up"]


def test_validation_checks_the_mapped_record_and_dead_letters_what_fails(sandbox):
    maps = {"people": {"points": "score", "score": "__NULL__"}}
    messages = [schema("people", PERSON_PROPS, ["email"]),
                record("people", {"email": "ann@example.com", "score": 3}),
                record("people", {"email": "bob@example.com", "score": "lots"})]
    run = run_target(sandbox_config(sandbox, stream_maps=maps, max_failures=1, dead_letter_path="@work/dead.jsonl"),
                     messages)
    assert run.returncode == 0, run.stderr
    assert [p["email"] for p in sandbox.people()] == ["ann@example.com"]
    assert sandbox.person(email="ann@example.com")["points"] == 3
    [dead] = run.file_lines("dead.jsonl")
    assert dead["record"]["email"] == "bob@example.com" and "points" in dead["reason"]

    sandbox.reset()
    run = run_target(sandbox_config(sandbox, stream_maps=maps, validate_records=False), messages)
    assert run.returncode == 0, run.stderr
    assert sandbox.person(email="bob@example.com")["points"] == "lots"
