"""What real taps send on a full table, pinned (docs/taps.md says where in their code): the order of SCHEMA,
ACTIVATE_VERSION, RECORD and STATE, the ``version`` on records, and what a resumed table looks like. A removal
rule for mirror rests on these; if a tap release changes them, these fail first.

- MeltanoLabs tap-postgres 0.10.0 (singer-sdk): ACTIVATE_VERSION once, before the records, nothing after them.
- singer-io tap-mysql 1.17.7: ACTIVATE_VERSION before the first full table's records and after every full table's
  records; a table killed part-way resumes past ``last_pk_fetched`` under a new version.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from helpers import run_target, sandbox_config
from taps import executable, run_tap_mysql, run_tap_postgres

pytestmark = pytest.mark.slow

ROWS = 2500  # tap-mysql writes STATE every 1,000 rows: a cut after 1,500 records resumes after row 1,000
# The tables' key is `customer_id`, not `id`: a column `id` is sent as Encharge's own person id.


def _postgres_customers(url: str, count: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE customers (customer_id INT PRIMARY KEY, email TEXT NOT NULL, plan TEXT)")
        connection.execute(
            "INSERT INTO customers SELECT i, 'p' || i || '@example.com', 'pro' FROM generate_series(1, %s) i", (count,)
        )


def _mariadb_customers(server, database: str, count: int) -> None:
    server.execute(
        "CREATE TABLE customers (customer_id INT PRIMARY KEY, email VARCHAR(200) NOT NULL,"
        " plan VARCHAR(20));"
        " INSERT INTO customers SELECT seq, CONCAT('p', seq, '@example.com'), 'pro'"
        f" FROM seq_1_to_{count};",
        database,
    )


def _versions(records: list[dict]) -> set:
    return {r.get("version") for r in records}


# MeltanoLabs tap-postgres (singer-sdk)


def test_tap_postgres_announces_the_version_before_its_records_and_sends_nothing_after(postgres_server, postgres_url):
    _postgres_customers(postgres_url, 5)
    before = int(time.time())
    run = run_tap_postgres(postgres_server, postgres_url, ["customers"])
    assert run.kinds() == ["SCHEMA", "ACTIVATE_VERSION", "RECORD", "STATE"]
    (activate,) = run.of_type("ACTIVATE_VERSION")
    assert activate["stream"] == "public-customers"
    assert [r["record"]["customer_id"] for r in run.records()] == [1, 2, 3, 4, 5]
    assert _versions(run.records()) == {activate["version"]}  # every record carries it
    # The version is the tap's start in whole seconds: two runs in the same second share one.
    assert before - 1 <= activate["version"] <= int(time.time()) + 1
    # The STATE after a complete full table says nothing of completeness.
    assert run.last_state == {"bookmarks": {"public-customers": {}}}


def test_tap_postgres_sends_no_activate_version_and_no_record_version_unless_told(postgres_server, postgres_url):
    _postgres_customers(postgres_url, 3)
    run = run_tap_postgres(postgres_server, postgres_url, ["customers"], emit_activate_version_messages=None)
    assert run.kinds() == ["SCHEMA", "RECORD", "STATE"]
    assert _versions(run.records()) == {None}


def test_tap_postgres_does_not_list_emit_activate_version_messages_in_its_about():
    about = subprocess.run(
        [executable("tap-postgres"), "--about", "--format=json"], capture_output=True, check=True, timeout=60
    )
    settings = json.loads(about.stdout)["settings"]["properties"]
    assert "emit_activate_version_messages" not in settings  # under Meltano, a custom setting
    assert "activate-version" in json.loads(about.stdout)["capabilities"]


def test_tap_postgres_records_reach_encharge_through_the_target_in_upsert_mode(postgres_server, postgres_url, sandbox):
    _postgres_customers(postgres_url, 5)
    tap = run_tap_postgres(postgres_server, postgres_url, ["customers"])
    run = run_target(sandbox_config(sandbox), tap.lines())
    assert run.returncode == 0, run.stderr
    assert sorted(p["email"] for p in sandbox.people()) == [f"p{i}@example.com" for i in range(1, 6)]
    assert run.states[-1]["bookmarks"] == {"public-customers": {}}


# singer-io tap-mysql


def test_tap_mysql_first_full_table_activates_its_version_before_and_after_the_records(
    mariadb_server, mariadb_database
):
    _mariadb_customers(mariadb_server, mariadb_database, 5)
    run = run_tap_mysql(mariadb_server, mariadb_database, ["customers"])
    assert run.kinds() == [
        "STATE",
        "SCHEMA",
        "ACTIVATE_VERSION",
        "RECORD",
        "STATE",
        "ACTIVATE_VERSION",
        "STATE",
        "STATE",
    ]
    first, last = run.of_type("ACTIVATE_VERSION")
    assert first["version"] == last["version"]
    assert _versions(run.records()) == {first["version"]}
    assert abs(first["version"] - time.time() * 1000) < 60_000  # milliseconds
    bookmark = run.last_state["bookmarks"][f"{mariadb_database}-customers"]
    assert bookmark == {"initial_full_table_complete": True}  # no version is kept
    assert run.last_state["currently_syncing"] is None

    # The next full table, from that STATE: the version only after the records, and a new one.
    again = run_tap_mysql(mariadb_server, mariadb_database, ["customers"], state=run.last_state)
    assert again.kinds() == ["STATE", "SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "STATE", "STATE"]
    (activate,) = again.of_type("ACTIVATE_VERSION")
    assert activate["version"] > first["version"]
    assert _versions(again.records()) == {activate["version"]}
    assert len(again.records()) == 5


@pytest.mark.parametrize("completed_before", [False, True], ids=["first-table", "after-a-complete-one"])
def test_tap_mysql_resumes_a_killed_full_table_past_last_pk_fetched_under_a_new_version(
    mariadb_server, mariadb_database, completed_before
):
    _mariadb_customers(mariadb_server, mariadb_database, ROWS)
    stream_id = f"{mariadb_database}-customers"
    state = None
    if completed_before:
        state = run_tap_mysql(mariadb_server, mariadb_database, ["customers"]).last_state

    cut = run_tap_mysql(mariadb_server, mariadb_database, ["customers"], state=state, stop_after_records=1500)
    assert cut.returncode < 0 and len(cut.records()) == 1500  # killed: its output simply ends
    assert cut.kinds()[-1] == "RECORD"
    (cut_version,) = _versions(cut.records())
    bookmark = cut.last_state["bookmarks"][stream_id]
    assert bookmark["last_pk_fetched"] == {"customer_id": 1000}
    assert bookmark["max_pk_values"] == {"customer_id": ROWS}
    assert "version" not in bookmark
    assert [a["version"] for a in cut.of_type("ACTIVATE_VERSION")] == ([] if completed_before else [cut_version])

    resumed = run_tap_mysql(mariadb_server, mariadb_database, ["customers"], state=cut.last_state)
    (resumed_version,) = _versions(resumed.records())
    assert resumed_version != cut_version  # the resumed table is a version of its own...
    # ...without rows 1-1000
    assert [r["record"]["customer_id"] for r in resumed.records()] == list(range(1001, ROWS + 1))
    # and is announced as complete after its records, like a whole table.
    expected = ["SCHEMA", "RECORD", "ACTIVATE_VERSION"]
    if not completed_before:  # the initial full table is still not complete: announced first too
        expected.insert(1, "ACTIVATE_VERSION")
    assert resumed.kinds(states=False) == expected
    assert {a["version"] for a in resumed.of_type("ACTIVATE_VERSION")} == {resumed_version}
    assert resumed.last_state["bookmarks"][stream_id] == {"initial_full_table_complete": True}


def test_tap_mysql_records_reach_encharge_through_the_target_in_upsert_mode(mariadb_server, mariadb_database, sandbox):
    _mariadb_customers(mariadb_server, mariadb_database, 5)
    tap = run_tap_mysql(mariadb_server, mariadb_database, ["customers"])
    run = run_target(sandbox_config(sandbox), tap.lines())
    assert run.returncode == 0, run.stderr
    assert sorted(p["email"] for p in sandbox.people()) == sorted(f"p{i}@example.com" for i in range(1, 6))
    assert run.states[-1]["bookmarks"] == tap.last_state["bookmarks"]
