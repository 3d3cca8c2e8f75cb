"""The demo's config (demo/config.json), the one the README tells users to copy: it passes the start-up checks
against a sandbox and delivers the demo's data."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import record, run_target, schema

from target_encharge.check import problems

DEMO = Path(__file__).resolve().parent.parent / "demo"


def demo_config(sandbox) -> dict:
    config = json.loads((DEMO / "config.json").read_text())
    return {**config, "api_url": sandbox.api_url, "ingest_url": sandbox.ingest_url}


def test_the_demo_config_passes_the_start_up_checks(sandbox):
    assert problems(demo_config(sandbox)) == []


def test_the_demo_config_delivers_the_demo_data(sandbox):
    messages = []
    for stream in ("people", "companies", "tags", "events"):
        rows = [json.loads(line) for line in (DEMO / "data" / f"{stream}.jsonl").read_text().splitlines() if line]
        props = {key: {} for row in rows for key in row}
        messages += [schema(stream, props), *(record(stream, row) for row in rows)]
    run = run_target(demo_config(sandbox), messages)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(sandbox.people()) >= len((DEMO / "data" / "people.jsonl").read_text().splitlines())
    assert sandbox.events() and sandbox.objects("company")
