"""A damaged ledger is one line, before anything is sent (issue 23): a schema_version that is not a number, a failure
waiting whose payload is not JSON or whose time is not ISO 8601, a delivery time that is not, random bytes in the
middle of the SQLite file; and a stream named with a NUL, which PostgreSQL's text cannot hold, runs like any other.

Each runs on SQLite and on a real PostgreSQL server (tests/postgres.py starts one), through the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import people, run_target, sandbox_config

from target_encharge.ledger import Failure, SyncLedger
from target_encharge.ledger.connection import locate


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def damage(ledger_url: str, statement: str) -> None:
    engine = sa.create_engine(locate(ledger_url).target)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def status(ledger_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "target-encharge-ledger"), "status"],
        env={**os.environ, "TARGET_ENCHARGE_LEDGER_URL": ledger_url},
        capture_output=True,
        text=True,
        check=False,
    )


def assert_one_line_before_sending(run, sandbox, *words: str) -> None:
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.error_line.startswith("target-encharge: error: ledger_url ")
    for word in words:
        assert word in run.error_line
    assert sandbox.write_counts() == {}  # nothing was sent


def assert_status_says(ledger_url: str, *words: str) -> None:
    shown = status(ledger_url)
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr and shown.stdout == ""
    (line,) = shown.stderr.splitlines()
    for word in words:
        assert word in line


def test_a_schema_version_that_is_not_a_number(sandbox, ledger_url):
    SyncLedger.open(ledger_url).close()
    damage(ledger_url, "UPDATE encharge_ledger_meta SET value = 'six' WHERE name = 'schema_version'")
    run = run_target(sandbox_config(sandbox, ledger_url=ledger_url), people(3))
    assert_one_line_before_sending(run, sandbox, "its schema_version is 'six', not a number: a damaged ledger")
    assert_status_says(ledger_url, "its schema_version is 'six', not a number")


def failed_once(sandbox, ledger_url) -> dict:
    """A ledger where three people of the stream's scope wait to be sent again (as a run that met 500s leaves it)."""
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    assert run_target(config, people(1, start=99)).returncode == 0
    with SyncLedger.open(ledger_url) as ledger:
        (stream,) = ledger.status()
        ledger.mark_failed(
            stream.scope,
            [
                Failure(identity=f"p{i}@example.com", payload={"email": f"p{i}@example.com"}, reason="500")
                for i in range(3)
            ],
        )
    sandbox.clear_requests()
    return config


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [("payload", "{not json", "payload is not JSON"), ("last_failed_at", "yesterday", "time is not ISO 8601")],
)
def test_a_failure_waiting_that_is_damaged(sandbox, ledger_url, column, value, said):
    config = failed_once(sandbox, ledger_url)
    damage(ledger_url, f"UPDATE encharge_ledger_failures SET {column} = '{value}'")
    run = run_target(config, people(3))
    assert_one_line_before_sending(run, sandbox, "a failure waiting in the ledger is damaged", said, "'people'")


def test_a_delivery_time_that_is_damaged(sandbox, ledger_url):
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    assert run_target(config, people(3)).returncode == 0
    damage(ledger_url, "UPDATE encharge_ledger_deliveries SET delivered_at = 'last tuesday'")
    assert_status_says(ledger_url, "a delivery's time is damaged")


def test_random_bytes_in_the_middle_of_the_file_stop_the_run_before_it_sends(sandbox, tmp_path):
    ledger = tmp_path / "ledger.db"
    config = sandbox_config(sandbox, ledger_url=str(ledger))
    assert run_target(config, people(2000)).returncode == 0
    sandbox.clear_requests()
    size = ledger.stat().st_size
    with ledger.open("r+b") as file:  # a page in the middle, overwritten
        file.seek(size // 2 // 4096 * 4096)
        file.write(os.urandom(4096))
    changed = people(2000)
    for message in changed[1:]:
        message["record"]["plan"] = "enterprise"  # every record would be sent
    run = run_target(config, changed)
    assert_one_line_before_sending(run, sandbox, "not a readable SQLite ledger")
    assert_status_says(str(ledger), "not a readable SQLite ledger")


def test_a_stream_named_with_a_nul_runs_like_any_other(sandbox, ledger_url):
    config = sandbox_config(sandbox, ledger_url=ledger_url)
    first = run_target(config, people(3, stream="odd\x00name"))
    assert first.returncode == 0, first.stderr
    assert len(sandbox.people()) == 3
    sandbox.clear_requests()
    again = run_target(config, people(3, stream="odd\x00name"))
    assert again.returncode == 0, again.stderr
    assert sandbox.write_counts() == {}  # known: unchanged
