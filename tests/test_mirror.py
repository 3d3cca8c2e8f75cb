"""Deletes you can trust (issue 22): `mirror` removes only from complete snapshots kept in the ledger, never a
person another stream (or the stream's new key) still holds, lets a re-insert after a delete win, keeps failed
removals to send again, and one guard covers both signals. Each sequence runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import random
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
from helpers import PERSON_PROPS, record, run_target, sandbox_config, schema, state, target_command

from target_encharge.ledger import Delivered, SyncLedger, fingerprint


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger's URL: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def config(sandbox: t.Any, ledger: str, **settings: t.Any) -> dict:
    return sandbox_config(sandbox, ledger_url=ledger, response_output="state", sync_mode="mirror", **settings)


def activate(stream: str, version: int) -> dict:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


def emails(n: int, start: int = 0) -> list[str]:
    return [f"p{i}@example.com" for i in range(start, start + n)]


def rows(stream: str, addresses: t.Iterable[str], version: int | None = None, plan: str = "pro") -> list[dict]:
    """Records of people, each carrying ``version`` as both tap families send it."""
    out = []
    for email in addresses:
        message = record(stream, {"email": email, "plan": plan})
        if version is not None:
            message["version"] = version
        out.append(message)
    return out


def head(stream: str = "people", keys: list[str] | None = None) -> dict:
    return schema(stream, PERSON_PROPS, keys or ["email"])


def closed_table(stream: str, addresses: list[str], version: int) -> list[dict]:
    """tap-mysql's full table: SCHEMA, the records of a version, the closing ACTIVATE_VERSION."""
    return [head(stream), *rows(stream, addresses, version), activate(stream, version)]


def announced_table(stream: str, addresses: list[str], version: int) -> list[dict]:
    """singer-sdk's full table: SCHEMA, ACTIVATE_VERSION first, the records; nothing after them."""
    return [head(stream), activate(stream, version), *rows(stream, addresses, version)]


def archived(sandbox: t.Any) -> list[str]:
    return sorted(p["email"] for p in sandbox.people() if p.get("archived"))


def ok(run: t.Any) -> t.Any:
    assert run.returncode == 0, run.stderr
    return run


def error_line(run: t.Any) -> str:
    return [x for x in run.stderr.splitlines() if x.startswith("target-encharge: error:")][-1]


# full tables


def test_a_resumed_full_table_under_a_new_version_removes_nobody_it_did_not_resend(sandbox, ledger):
    mirror = config(sandbox, ledger)
    everyone = emails(10)
    ok(run_target(mirror, closed_table("people", everyone, 1)))
    # the tap dies at row 5 of the next full table (its output just ends: no closing ACTIVATE_VERSION) ...
    ok(run_target(mirror, [head(), activate("people", 2), *rows("people", everyone[:5], 2), state({"pk": 5})]))
    # ... and resumes past last_pk_fetched under a new version, which it closes as if it were the whole table
    ok(run_target(mirror, [head(), *rows("people", everyone[5:], 3), activate("people", 3)]))
    assert archived(sandbox) == []
    # a later full table that lacks p9 removes p9 only, at once (the tap closes its versions)
    ok(run_target(mirror, closed_table("people", everyone[:9], 4)))
    assert archived(sandbox) == ["p9@example.com"]


def test_a_schema_change_in_the_middle_of_a_snapshot_removes_nobody(sandbox, ledger):
    mirror = config(sandbox, ledger)
    everyone = emails(10)
    ok(run_target(mirror, closed_table("people", everyone, 1)))
    split = [
        head(),
        *rows("people", everyone[:5], 2),
        schema("people", {**PERSON_PROPS, "country": {"type": ["string", "null"]}}, ["email"]),
        *rows("people", everyone[5:], 2),
        activate("people", 2),
    ]
    ok(run_target(mirror, split))
    assert archived(sandbox) == []


def test_a_snapshot_cut_short_removes_nobody_and_a_deleted_row_goes_at_the_second_run(sandbox, ledger):
    """singer-sdk taps: ACTIVATE_VERSION before the records, nothing after; a crashed tap's output just ends."""
    mirror = config(sandbox, ledger)
    everyone = emails(10)
    ok(run_target(mirror, announced_table("people", everyone, 1)))
    ok(run_target(mirror, announced_table("people", everyone[:9], 2)))  # cut short at 90%
    assert archived(sandbox) == []
    ok(run_target(mirror, announced_table("people", everyone, 3)))  # the next run is whole again
    assert archived(sandbox) == []
    ok(run_target(mirror, announced_table("people", everyone[:9], 4)))  # p9 deleted at the source
    assert archived(sandbox) == []  # missing from one complete snapshot: it waits for a confirmation
    ok(run_target(mirror, announced_table("people", everyone[:9], 5)))
    assert archived(sandbox) == ["p9@example.com"]


def test_mirror_confirmations_one_removes_at_the_first_complete_snapshot(sandbox, ledger):
    mirror = config(sandbox, ledger, mirror_confirmations=1)
    ok(run_target(mirror, announced_table("people", emails(10), 1)))
    ok(run_target(mirror, announced_table("people", emails(9), 2)))
    assert archived(sandbox) == ["p9@example.com"]


def test_a_fatal_error_completes_nothing(sandbox, ledger):
    """A run stopped by a fatal error (here a line cut short) never completes a snapshot."""
    mirror = config(sandbox, ledger, mirror_confirmations=1)
    ok(run_target(mirror, announced_table("people", emails(10), 1)))
    cut = run_target(mirror, [head(), activate("people", 2), *rows("people", emails(3), 2), '{"type": "RECORD", "str'])
    assert cut.returncode == 1  # a bad line: a fatal error
    assert archived(sandbox) == []


# people in several streams, and keys


def test_a_person_in_two_streams_is_removed_only_when_neither_holds_her(sandbox, ledger):
    mirror = config(sandbox, ledger, max_delete_share=0.6)
    ann, bob, carl = "ann@example.com", "bob@example.com", "carl@example.com"
    ok(run_target(mirror, [*closed_table("leads", [ann, bob], 1), *closed_table("customers", [ann, carl], 1)]))
    ok(run_target(mirror, [*closed_table("leads", [bob], 2), *closed_table("customers", [ann, carl], 2)]))
    assert archived(sandbox) == []
    ok(run_target(mirror, [*closed_table("leads", [bob], 3), *closed_table("customers", [carl], 3)]))
    assert archived(sandbox) == [ann]


def test_a_rekeyed_stream_removes_nobody_and_says_why(sandbox, ledger):
    mirror = config(sandbox, ledger, max_delete_share=1)
    people = [{"email": e, "userId": f"u{i}", "plan": "pro"} for i, e in enumerate(emails(10))]

    def table(keys: list[str], version: int) -> list[dict]:
        return [
            head(keys=keys),
            *({**record("people", p), "version": version} for p in people),
            activate("people", version),
        ]

    ok(run_target(mirror, table(["userId"], 1)))
    rekeyed = ok(run_target(mirror, table(["email"], 2)))
    assert archived(sandbox) == []
    assert sandbox.deleted_people() == []
    assert "key properties changed" in rekeyed.stderr
    ok(run_target(mirror, table(["email"], 3)))  # and the rows under the old key are gone from the ledger
    assert archived(sandbox) == []


# log-based deletes


CUSTOMER_PROPS = {
    "customer_id": {"type": "integer"},
    "email": {"type": ["string", "null"]},
    "plan": {"type": ["string", "null"]},
    "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
}
GONE = "2024-05-01T00:00:00Z"


def customers(items: list[dict]) -> list[dict]:
    return [schema("customers", CUSTOMER_PROPS, ["customer_id"]), *(record("customers", r) for r in items)]


def customer(n: int, **more: t.Any) -> dict:
    return {"customer_id": n, "email": f"c{n}@example.com", "plan": "pro", **more}


def test_a_delete_then_a_reinsert_ends_live(sandbox, ledger):
    mirror = config(sandbox, ledger, max_delete_share=0.5)
    ok(run_target(mirror, customers([customer(i) for i in range(3)])))
    ok(run_target(mirror, customers([{"customer_id": 1, "_sdc_deleted_at": GONE}, customer(1)])))
    assert archived(sandbox) == []
    ok(run_target(mirror, customers([{"customer_id": 2, "_sdc_deleted_at": GONE}])))  # the last word: deleted
    assert [p["email"] for p in sandbox.people() if p.get("archived")] == ["c2@example.com"]


def test_the_guard_covers_sdc_deleted_at_and_a_raised_share_sends_what_it_held(sandbox, ledger):
    mirror = config(sandbox, ledger, delete_action="delete")
    ok(run_target(mirror, customers([customer(i) for i in range(10)])))
    sandbox.clear_requests()
    marked = customers([{"customer_id": i, "_sdc_deleted_at": GONE} for i in range(6)])
    run = run_target(mirror, [*marked, record("customers", customer(9, plan="gold")), state({"lsn": 9})])
    assert run.returncode == 1
    line = error_line(run)
    assert "customers" in line and "6" in line and "60%" in line and "max_delete_share" in line
    assert sandbox.deleted_people() == []
    assert sandbox.person(email="c9@example.com")["plan"] == "gold"  # the rest was delivered
    assert run.states[-1]["lsn"] == 9  # and its STATE went out
    ok(run_target({**mirror, "max_delete_share": 0.7}, [customers([])[0], state({"lsn": 10})]))
    assert sorted(p["email"] for p in sandbox.deleted_people()) == [f"c{i}@example.com" for i in range(6)]


def test_a_failed_removal_is_kept_shown_and_sent_by_the_next_run(sandbox, ledger):
    mirror = config(sandbox, ledger, max_delete_share=0.5, max_retries=0)
    ok(run_target(mirror, closed_table("people", emails(4), 1)))
    sandbox.set_faults(error_rate=0.8)  # seeded: the start-up check passes (0.84), the removal gets a 500 (0.76)
    failed = run_target(mirror, closed_table("people", emails(3), 2))  # every record unchanged: only the removal
    assert archived(sandbox) == []
    assert "HTTP 500" in failed.stderr
    with SyncLedger.open(ledger, read_only=True) as opened:
        reasons = {reason for row in opened.status() for reason in row.reasons}
    assert any(reason.startswith("removal:") for reason in reasons), reasons
    sandbox.set_faults(error_rate=0.0)
    ok(run_target(mirror, closed_table("people", emails(3), 3)))
    assert archived(sandbox) == ["p3@example.com"]


# dry runs


def test_a_dry_run_shows_each_removal_and_each_identity_waiting_for_a_confirmation(sandbox, ledger):
    mirror = config(sandbox, ledger, max_delete_share=0.5)
    ok(run_target(mirror, announced_table("people", emails(4), 1)))
    ok(run_target(mirror, announced_table("people", emails(3), 2)))  # p3 missing once: waits
    dry = ok(run_target({**mirror, "dry_run": True}, announced_table("people", emails(2), 3)))
    lines = dry.stderr.splitlines()
    assert any("would remove" in x and "p3@example.com" in x and "missing from the last 2" in x for x in lines)
    assert any("p2@example.com" in x and "waits for a confirmation" in x for x in lines)
    assert archived(sandbox) == []


# kill -9


def _killed_run(config_path: Path, lines: list[str], cut: int, pause: float) -> None:
    process = subprocess.Popen(
        [*target_command(), "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    process.stdin.write("".join(lines[:cut]).encode())
    process.stdin.flush()
    time.sleep(pause)
    process.kill()  # SIGKILL: nothing of the run completes
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_points_then_a_rerun_never_removes_a_live_person(sandbox, ledger, tmp_path, seed):
    chance = random.Random(seed)  # noqa: S311 - where to cut, repeatable
    mirror = config(sandbox, ledger, max_delete_share=1, mirror_confirmations=1)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(mirror))
    everyone = emails(30)
    ok(run_target(mirror, closed_table("people", everyone, 1)))
    live = everyone[:29]  # p29 left the source
    for version in (2, 3):
        table = [json.dumps(m) + "\n" for m in closed_table("people", live, version)]
        _killed_run(path, table, chance.randrange(1, len(table) + 1), chance.uniform(0, 0.6))
        assert not set(archived(sandbox)) & set(live)
    ok(run_target(mirror, closed_table("people", live, 4)))
    assert archived(sandbox) == ["p29@example.com"]


# end to end, with the real taps


def _pg(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def _customers_left(sandbox: t.Any) -> list[str]:
    return sorted((p["email"] for p in sandbox.people() if p.get("archived")), key=lambda e: int(e[1:].split("@")[0]))


@pytest.mark.slow
def test_tap_postgres_full_tables_remove_a_deleted_row_at_the_second_run_and_the_guard_stops_a_mass_delete(
    sandbox, tmp_path, postgres_server, postgres_url
):
    from taps import run_tap_postgres

    _pg(
        postgres_url,
        "CREATE TABLE customers (customer_id INT PRIMARY KEY, email TEXT NOT NULL, plan TEXT)",
        "INSERT INTO customers SELECT i, 'p' || i || '@example.com', 'pro' FROM generate_series(1, 20) i",
    )
    mirror = config(sandbox, str(tmp_path / "ledger.db"))

    def sync() -> t.Any:
        time.sleep(1.1)  # singer-sdk's version is the tap's start in whole seconds: one run, one version
        return run_target(mirror, run_tap_postgres(postgres_server, postgres_url, ["customers"]).lines())

    ok(sync())
    _pg(postgres_url, "DELETE FROM customers WHERE customer_id IN (3, 7)")
    ok(sync())
    assert _customers_left(sandbox) == []  # missing from one complete full table: waits for a confirmation
    ok(sync())
    assert _customers_left(sandbox) == ["p3@example.com", "p7@example.com"]  # and nobody else
    _pg(postgres_url, "DELETE FROM customers WHERE customer_id > 10")
    ok(sync())
    stopped = sync()
    assert stopped.returncode == 1
    assert "public-customers" in error_line(stopped) and "max_delete_share" in error_line(stopped)
    assert _customers_left(sandbox) == ["p3@example.com", "p7@example.com"]


@pytest.mark.slow
def test_tap_mysql_interrupted_and_resumed_removes_nobody_then_removes_only_the_deleted(
    sandbox, tmp_path, mariadb_server, mariadb_database
):
    from taps import run_tap_mysql

    rows = 2500  # tap-mysql writes STATE every 1,000 rows: a cut after 1,500 records resumes after row 1,000
    mariadb_server.execute(
        "CREATE TABLE customers (customer_id INT PRIMARY KEY, email VARCHAR(200) NOT NULL, plan VARCHAR(20));"
        " INSERT INTO customers SELECT seq, CONCAT('p', seq, '@example.com'), 'pro'"
        f" FROM seq_1_to_{rows};",
        mariadb_database,
    )
    mirror = config(sandbox, str(tmp_path / "ledger.db"))

    def sync(state: dict | None = None, stop: int | None = None) -> tuple[t.Any, t.Any]:
        tap = run_tap_mysql(mariadb_server, mariadb_database, ["customers"], state=state, stop_after_records=stop)
        return tap, run_target(mirror, tap.lines())

    _, first = sync()
    ok(first)
    cut, target = sync(state=first.states[-1], stop=1500)  # the tap is killed: its output just ends
    ok(target)
    _, resumed = sync(state=target.states[-1])  # rows 1,001 to 2,500 under a new version, closed
    ok(resumed)
    assert _customers_left(sandbox) == []
    mariadb_server.execute("DELETE FROM customers WHERE customer_id IN (5, 1200, 2400)", mariadb_database)
    _, after = sync(state=resumed.states[-1])
    ok(after)
    assert _customers_left(sandbox) == ["p5@example.com", "p1200@example.com", "p2400@example.com"]
    mariadb_server.execute("DELETE FROM customers WHERE customer_id > 1000", mariadb_database)
    _, stopped = sync(state=after.states[-1])
    assert stopped.returncode == 1
    assert "customers" in error_line(stopped) and "max_delete_share" in error_line(stopped)
    assert len(_customers_left(sandbox)) == 3


# tags as sets

TAG_PROPS = {"email": {"type": "string"}, "tag": {"type": "string"}}
ANN, BOB = "ann@example.com", "bob@example.com"


def tag_table(items: list[tuple[str, str]], keys: list[str], version: int | None) -> list[dict]:
    """A stream of {"email", "tag"} records; with ``version``, a full table its tap closes."""
    messages = [schema("tags", TAG_PROPS, keys)]
    for email, tags in items:
        message = record("tags", {"email": email, "tag": tags})
        if version is not None:
            message["version"] = version
        messages.append(message)
    return [*messages, activate("tags", version)] if version is not None else messages


def tags_of(sandbox: t.Any, email: str) -> list[str]:
    return sorted(sandbox.person(email=email)["tags"])


def tag_removals(sandbox: t.Any) -> list[dict]:
    return [r["body"] for r in sandbox.requests(writes_only=True) if r["method"] == "DELETE"]


@pytest.mark.parametrize(
    ("keys", "version"),
    [(["email"], None), (["email"], 1), ([], 1)],
    ids=["keyed-incremental", "keyed-full-table", "unkeyed-full-table"],
)
def test_a_tag_set_that_shrank_removes_exactly_the_tags_that_left(sandbox, ledger, keys, version):
    """{"tag": "vip,beta,paid"} then "vip,paid": beta goes; vip, paid and a flow's tag stay, never removed
    and added again. Keyed by the person, at once (even without a snapshot); unkeyed, by the snapshot."""
    sandbox.seed(people=[{"email": ANN}, {"email": BOB}], tags=[{"tag": "from-a-flow", "email": ANN}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.5)
    later = None if version is None else version + 1
    ok(run_target(mirror, tag_table([(ANN, "vip,beta,paid"), (BOB, "vip")], keys, version)))
    assert tags_of(sandbox, ANN) == ["beta", "from-a-flow", "paid", "vip"]
    with SyncLedger.open(ledger) as known:  # one row per person and single tag
        assert sorted(d.encharge_id for d in known.known(scope_of(known, "tags")).values()) == [
            f"email:{ANN} tag:beta",
            f"email:{ANN} tag:paid",
            f"email:{ANN} tag:vip",
            f"email:{BOB} tag:vip",
        ]
    sandbox.clear_requests()
    ok(run_target(mirror, tag_table([(ANN, "vip,paid"), (BOB, "vip")], keys, later)))
    assert tags_of(sandbox, ANN) == ["from-a-flow", "paid", "vip"]
    assert tags_of(sandbox, BOB) == ["vip"]
    assert tag_removals(sandbox) == [{"tag": "beta", "email": ANN}]  # only beta: vip and paid never left
    assert [r for r in sandbox.requests(writes_only=True) if r["method"] == "POST"] == []  # unchanged: not sent
    sandbox.clear_requests()
    again = None if later is None else later + 1
    ok(run_target(mirror, tag_table([(ANN, "vip,paid"), (BOB, "vip")], keys, again)))  # the same set again
    assert sandbox.requests(writes_only=True) == []
    assert tags_of(sandbox, ANN) == ["from-a-flow", "paid", "vip"]


def test_a_tag_set_that_grew_back_keeps_the_tag(sandbox, ledger):
    """Keyed by the person: beta dropped then re-added in the same run is the last word: it stays."""
    sandbox.seed(people=[{"email": ANN}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.5)
    ok(run_target(mirror, tag_table([(ANN, "vip,beta")], ["email"], None)))
    ok(run_target(mirror, tag_table([(ANN, "vip"), (ANN, "vip,beta")], ["email"], None)))
    assert tags_of(sandbox, ANN) == ["beta", "vip"]


def test_a_keyed_record_whose_tag_set_is_empty_removes_its_tags_and_no_flows(sandbox, ledger):
    sandbox.seed(people=[{"email": ANN}, {"email": BOB}], tags=[{"tag": "from-a-flow", "email": ANN}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.75, max_failures=1)
    ok(run_target(mirror, tag_table([(ANN, "vip,beta"), (BOB, "vip")], ["email"], None)))
    # refused (no tag to add: a dead letter, within max_failures), and its tag set is empty: both of ann's go
    ok(run_target(mirror, tag_table([(ANN, "")], ["email"], None)))
    assert tags_of(sandbox, ANN) == ["from-a-flow"]
    assert tags_of(sandbox, BOB) == ["vip"]


def test_a_dry_run_shows_the_dropped_tag_it_would_remove(sandbox, ledger, tmp_path):
    sandbox.seed(people=[{"email": ANN}, {"email": BOB}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.5)
    ok(run_target(mirror, tag_table([(ANN, "vip,beta,paid"), (BOB, "vip")], ["email"], None)))
    sandbox.clear_requests()
    previews = tmp_path / "previews.jsonl"
    dry = {**mirror, "dry_run": True, "preview_path": str(previews)}
    ok(run_target(dry, tag_table([(ANN, "vip,paid"), (BOB, "vip")], ["email"], None)))
    removals = [p for p in map(json.loads, previews.read_text().splitlines()) if p["method"] == "DELETE"]
    assert len(removals) == 1 and "tag set" in removals[0]["why"], removals
    assert "beta" in json.dumps(removals[0]) and "paid" not in json.dumps(removals[0])
    assert sandbox.requests(writes_only=True) == []
    assert tags_of(sandbox, ANN) == ["beta", "paid", "vip"]


def test_dropped_tags_count_in_the_guard(sandbox, ledger):
    sandbox.seed(people=[{"email": ANN}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.5)
    ok(run_target(mirror, tag_table([(ANN, "a,b,c,d")], ["email"], None)))
    run = run_target(mirror, tag_table([(ANN, "a")], ["email"], None))  # 3 of 4 tags: past the share
    assert run.returncode == 1 and "max_delete_share" in error_line(run)
    assert tags_of(sandbox, ANN) == ["a", "b", "c", "d"]
    ok(run_target({**mirror, "max_delete_share": 0.8}, tag_table([], ["email"], None)))  # raised: sent
    assert tags_of(sandbox, ANN) == ["a"]


@pytest.mark.parametrize("keys", [["email"], []], ids=["keyed", "unkeyed"])
def test_a_row_of_joined_tags_from_before_removes_only_the_tag_that_left(sandbox, ledger, keys):
    """A ledger written when an add_tag identity was the person and the joined tags: its row is replaced by
    single ones, and the snapshot that lacks it removes only the tag no row holds (vip and paid stay)."""
    sandbox.seed(people=[{"email": ANN}, {"email": BOB}], tags=[{"tag": "from-a-flow", "email": ANN}])
    mirror = config(sandbox, ledger, endpoint="add_tag", max_delete_share=0.5)
    ok(run_target(mirror, tag_table([(ANN, "vip,beta,paid"), (BOB, "vip")], keys, 1)))
    with SyncLedger.open(ledger) as known:  # as the ledger held it before tags were single
        scope = scope_of(known, "tags")
        singles = [i for i, d in known.known(scope).items() if d.encharge_id.startswith(f"email:{ANN} ")]
        known.remove(scope, singles)
        joined = '["ann@example.com"]' if keys else ANN
        old = f"key:{joined}" if keys else f"email:{joined} tag:vip,beta,paid"
        record_then = {"email": ANN, "tag": "vip,beta,paid"}
        known.mark_delivered(scope, [Delivered(old, fingerprint(record_then), f"email:{ANN} tag:vip,beta,paid")])
    sandbox.clear_requests()
    ok(run_target(mirror, tag_table([(ANN, "vip,paid"), (BOB, "vip")], keys, 2)))
    assert tag_removals(sandbox) == [{"tag": "beta", "email": ANN}]
    assert tags_of(sandbox, ANN) == ["from-a-flow", "paid", "vip"]
    with SyncLedger.open(ledger) as known:
        person = (lambda e: "key:" + json.dumps([e])) if keys else (lambda e: f"email:{e}")
        left = [(ANN, "paid"), (ANN, "vip"), (BOB, "vip")]
        assert sorted(known.known(scope_of(known, "tags"))) == sorted(f"{person(e)} tag:{tag}" for e, tag in left)


def scope_of(known: SyncLedger, stream: str) -> t.Any:
    (found,) = [s for s in known.status() if s.scope.stream == stream]
    return found.scope
