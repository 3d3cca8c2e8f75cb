"""Singer METRIC lines for the calls: users' log pipelines read the SDK's `http_request_duration` timer."""

from __future__ import annotations

import json
import re

from helpers import people, run_target, sandbox_config, schema

METRIC = re.compile(r"METRIC: (\{.*\})")


def _durations(stderr: str) -> list[dict]:
    points = [json.loads(m.group(1)) for m in METRIC.finditer(stderr)]
    return [p for p in points if p["metric"] == "http_request_duration"]


def test_each_call_is_a_metric_line_with_its_endpoint_and_status(sandbox):
    config = sandbox_config(sandbox, batch_size=2)
    run = run_target(config, [schema("people"), *people(3)])
    assert run.returncode == 0, run.stderr
    calls = [p for p in _durations(run.stderr) if p["tags"]["stream"] == "people"]
    assert len(calls) == 2  # three people in batches of two
    for point in calls:
        assert point["type"] == "timer"
        assert point["value"] >= 0
        assert point["tags"] == {
            "stream": "people",
            "endpoint": "create_or_update_person",
            "http_status_code": 200,
            "status": "succeeded",
        }


def test_a_refused_call_is_a_failed_metric_and_the_url_never_shows(sandbox):
    config = sandbox_config(sandbox, endpoint="add_tag")
    record = {"type": "RECORD", "stream": "tags", "record": {"email": "secret.person@example.com", "tag": "vip"}}
    run = run_target(config, [schema("tags"), record])
    failed = [p for p in _durations(run.stderr) if p["tags"]["status"] == "failed"]
    assert failed and failed[0]["tags"]["http_status_code"] == 404  # no such person: Encharge says 404
    assert all("secret.person" not in json.dumps(p) for p in _durations(run.stderr))
