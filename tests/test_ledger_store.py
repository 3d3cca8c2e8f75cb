"""The sync ledger's store, on SQLite and on a real PostgreSQL server: what users rely on between runs.

Entries come back as written, only where they were written (account, destination, stream); failures wait with
their payload; two threads or two processes never corrupt it; a ledger that cannot be used says so in one line
naming ledger_url with its password masked; the commands show, forget and replay.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from postgres import PASSWORD

from target_encharge.errors import ConfigError
from target_encharge.ledger import (
    Delivered,
    Failure,
    LedgerError,
    Scope,
    SyncLedger,
    canonical_json,
    commands,
    fingerprint,
    mask_url,
    schema,
)
from target_encharge.ledger.connection import locate

PEOPLE = Scope("account-1", "create_or_update_person", "people")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger's URL: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url: str) -> SyncLedger:
    with SyncLedger.open(ledger_url) as opened:
        yield opened


def people(count: int, version: str = "v1") -> list[Delivered]:
    return [Delivered(f"person-{n}@example.com", fingerprint({"n": n, "v": version})) for n in range(count)]


# -- fingerprints --------------------------------------------------------------------------------------------


def test_fingerprint_is_the_same_for_equal_payloads() -> None:
    moment = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    in_paris = moment.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert fingerprint({"a": Decimal("1.50"), "b": "x"}) == fingerprint({"b": "x", "a": 1.5})
    assert fingerprint({"n": 2}) == fingerprint({"n": Decimal("2.00")}) == fingerprint({"n": 2.0})
    assert fingerprint({"at": moment}) == fingerprint({"at": in_paris})
    assert canonical_json({"at": moment, "n": Decimal("1E+2")}) == '{"at":"2024-05-01T12:00:00+00:00","n":100}'


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_fingerprints_as_the_decimal_of_its_shortest_text(number: float) -> None:
    """Floats take a short cut (no Decimal) where their text is the same: the fingerprint must not change."""
    assert fingerprint({"n": number}) == fingerprint({"n": Decimal(repr(number))})


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_fingerprints_by_its_value(number: Decimal) -> None:
    """Plain decimals take a short cut; the text must stay that of an int when integral, else the normalized
    decimal (what the first ledgers were written with)."""
    exact = decimal.Context(prec=decimal.MAX_PREC)  # every digit (issue 23: no rounding past 28)
    by_value = int(number) if number == number.to_integral_value() else number.normalize(exact)
    assert canonical_json({"n": number}) == canonical_json({"n": by_value})
    assert fingerprint({"n": number}) == fingerprint(
        {"n": Decimal(str(number) + "000") if "." in str(number) and "E" not in str(number) else number}
    )


@given(
    st.datetimes(
        timezones=st.one_of(
            st.none(),
            st.timezones(),
            st.integers(-23 * 3600, 23 * 3600).map(lambda s: datetime.timezone(datetime.timedelta(seconds=s))),
        )
    )
)
def test_a_datetime_fingerprints_as_its_isoformat_in_utc(moment: datetime.datetime) -> None:
    """Date-times take a short cut (msgspec's text, `Z` made `+00:00`): the text must stay isoformat's, in UTC
    when the date-time has an offset (what the first ledgers were written with)."""
    offset = moment.utcoffset()
    try:
        expected = (moment.astimezone(datetime.timezone.utc) if offset else moment).isoformat()
    except OverflowError:  # in UTC it would fall outside the years a datetime holds: refused either way
        with pytest.raises(OverflowError):
            canonical_json(moment)
        return
    assert canonical_json({"at": moment}) == json.dumps({"at": expected}, separators=(",", ":"))


def test_float_canonical_text_is_pinned() -> None:
    """What ledgers already hold: a changed canonical text would resend every record with such a number."""
    floats = {"score": 0.1, "tiny": 1e-7, "big": 1e20, "whole": 3.0, "third": 1 / 3, "edge": 1e15 + 0.5}
    assert canonical_json(floats) == (
        '{"big":100000000000000000000,"edge":1000000000000000.5,"score":0.1,'
        '"third":0.3333333333333333,"tiny":1E-7,"whole":3}'
    )


def test_fingerprint_tells_changed_payloads_apart() -> None:
    base = {"email": "ada@example.com", "score": Decimal("1.5"), "tags": ["a", "b"]}
    for changed in (
        {**base, "score": Decimal("1.51")},
        {**base, "tags": ["b", "a"]},
        {**base, "score": "1.5"},
        {**base, "extra": None},
        {**base, "email": "Ada@example.com"},
    ):
        assert fingerprint(changed) != fingerprint(base)


def test_fingerprint_is_stable_across_processes_and_releases() -> None:
    """A changed fingerprint function would resend every record of every user once: pinned."""
    payload = {"email": "ada@example.com", "score": Decimal("1.50"), "tags": ["a", "b"]}
    script = (
        "from decimal import Decimal; from target_encharge.ledger import fingerprint; "
        "print(fingerprint({'tags': ['a', 'b'], 'score': Decimal('1.5'), 'email': 'ada@example.com'}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == fingerprint(payload) == "3dec1ddfa12e0f32bc31533f08a91151"


# -- deliveries ----------------------------------------------------------------------------------------------


def test_delivered_entries_come_back_as_written(ledger: SyncLedger) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    ledger.mark_delivered(
        PEOPLE,
        [
            Delivered("ada@example.com", "f1", encharge_id="enc-1"),
            Delivered("bob@example.com", "f2", tags=frozenset({"vip", "beta"})),
        ],
    )
    found = ledger.lookup(PEOPLE, ["ada@example.com", "bob@example.com", "unknown@example.com"])
    assert set(found) == {"ada@example.com", "bob@example.com"}
    ada = found["ada@example.com"]
    assert (ada.fingerprint, ada.encharge_id, ada.tags) == ("f1", "enc-1", None)
    assert found["bob@example.com"].tags == frozenset({"vip", "beta"})
    assert before - datetime.timedelta(seconds=1) <= ada.delivered_at <= datetime.datetime.now(datetime.timezone.utc)
    assert ada.delivered_at.tzinfo == datetime.timezone.utc


def test_a_new_delivery_replaces_the_fingerprint_and_keeps_what_it_does_not_say(ledger: SyncLedger) -> None:
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", "f1", encharge_id="enc-1", tags=frozenset({"vip"}))])
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", "f2")])
    ada = ledger.lookup(PEOPLE, ["ada@example.com"])["ada@example.com"]
    assert (ada.fingerprint, ada.encharge_id, ada.tags) == ("f2", "enc-1", frozenset({"vip"}))


def test_the_same_identity_twice_in_one_write_keeps_the_last(ledger: SyncLedger) -> None:
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", "old"), Delivered("ada@example.com", "new")])
    assert ledger.lookup(PEOPLE, ["ada@example.com"])["ada@example.com"].fingerprint == "new"


def test_identities_come_back_whatever_characters_they_hold(ledger: SyncLedger) -> None:
    """Identities are the source's own text (an email, a key as JSON): quotes, backslashes, line breaks, emoji,
    very long ones, and on SQLite a NUL, are written, found, told apart and removed exactly (SQLite's JSON reader
    would cut one at a NUL, so two people would share an entry), in more than one statement's worth (2,500).
    (PostgreSQL text holds no NUL: the templates never make an identity with one, see test_sync.py.)"""
    odd = [
        'key:["a\\"b"]',
        "email:x-a@example.com",
        "email:x-b@example.com",
        "key:\\",
        "email:a\nb",
        "email:ünï😀@example.com",
        "key:" + "x" * 5000,
        "1",
        "null",
    ]
    if ledger.location.is_sqlite:
        odd[1:3] = ["email:x\x00a@example.com", "email:x\x00b@example.com"]
    many = [*odd, *(f"email:user{i}@example.com" for i in range(2500))]
    ledger.mark_delivered(
        PEOPLE, [Delivered(identity, f"fp-{i}", encharge_id=identity) for i, identity in enumerate(many)]
    )
    assert ledger.fingerprints(PEOPLE, many) == {identity: f"fp-{i}" for i, identity in enumerate(many)}
    found = ledger.lookup(PEOPLE, odd)
    assert {i: d.encharge_id for i, d in found.items()} == {i: i for i in odd}
    assert ledger.remove(PEOPLE, [odd[1]]) == 1
    assert set(ledger.fingerprints(PEOPLE, odd)) == set(odd) - {odd[1]}
    assert ledger.remove(PEOPLE, many) == len(many) - 1


def test_a_failure_whose_answer_holds_a_nul_waits_all_the_same(ledger: SyncLedger) -> None:
    """An answer's text may hold a NUL character, which PostgreSQL text cannot: the reason keeps U+FFFD there."""
    ledger.mark_failed(
        PEOPLE,
        [
            Failure(
                identity="email:a@example.com",
                payload={"email": "a@example.com"},
                reason="HTTP 500: bad\x00answer",
                status=500,
                retryable=True,
            )
        ],
    )
    (waiting,) = ledger.waiting_failures(PEOPLE.account)
    assert waiting.reason == "HTTP 500: bad\ufffdanswer"


def test_nothing_is_delivered_until_the_caller_says_so(ledger: SyncLedger) -> None:
    ledger.mark_failed(
        PEOPLE,
        [
            Failure(
                identity="ada@example.com",
                payload={"email": "ada@example.com"},
                reason="Encharge answered 503",
                status=503,
            )
        ],
    )
    assert ledger.lookup(PEOPLE, ["ada@example.com"]) == {}
    assert ledger.known(PEOPLE) == {}


def test_scopes_never_see_each_other(ledger: SyncLedger) -> None:
    others = [
        Scope("account-2", PEOPLE.destination, PEOPLE.stream),
        Scope(PEOPLE.account, "add_tag", "people"),
        Scope(PEOPLE.account, PEOPLE.destination, "customers"),
    ]
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", "mine")])
    for scope in others:
        assert ledger.lookup(scope, ["ada@example.com"]) == {}
        ledger.mark_delivered(scope, [Delivered("ada@example.com", scope.account + scope.destination + scope.stream)])
    assert ledger.lookup(PEOPLE, ["ada@example.com"])["ada@example.com"].fingerprint == "mine"
    assert ledger.forget(account="account-2") == 1
    assert ledger.lookup(others[0], ["ada@example.com"]) == {}
    assert all(ledger.lookup(scope, ["ada@example.com"]) for scope in [PEOPLE, *others[1:]])


def test_mirror_finds_what_it_wrote_and_removes_it(ledger: SyncLedger) -> None:
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", "f1"), Delivered("bob@example.com", "f2")])
    assert set(ledger.known(PEOPLE)) == {"ada@example.com", "bob@example.com"}
    ledger.mark_failed(PEOPLE, [Failure(identity="bob@example.com", payload={}, reason="503", status=503)])
    assert ledger.remove(PEOPLE, ["bob@example.com", "never@example.com"]) == 1
    assert set(ledger.known(PEOPLE)) == {"ada@example.com"}
    assert ledger.waiting_failures(PEOPLE.account) == []


# -- failures ------------------------------------------------------------------------------------------------


def test_failures_wait_with_their_payload_until_delivered(ledger: SyncLedger) -> None:
    payload = {"email": "ada@example.com", "score": Decimal("12345678901234567890.50"), "city": "Zürich"}
    failure = Failure(identity="ada@example.com", payload=payload, reason="Encharge answered 503", status=503)
    ledger.mark_failed(PEOPLE, [failure])
    ledger.mark_failed(
        PEOPLE,
        [
            Failure(
                identity="bob@example.com",
                payload={"email": "bob@example.com"},
                reason="Encharge refused it: 400 invalid email",
                status=400,
                retryable=False,
            )
        ],
    )
    ledger.mark_failed(PEOPLE, [Failure(identity="ada@example.com", payload=payload, reason="timed out")])
    [waiting] = ledger.waiting_failures(PEOPLE.account)
    assert (waiting.identity, waiting.payload, waiting.scope) == ("ada@example.com", payload, PEOPLE)
    assert (waiting.reason, waiting.status, waiting.attempts) == ("timed out", None, 2)
    assert waiting.first_failed_at <= waiting.last_failed_at
    everything = ledger.waiting_failures(PEOPLE.account, retryable_only=False)
    assert {f.identity for f in everything} == {"ada@example.com", "bob@example.com"}
    assert ledger.waiting_failures(PEOPLE.account, stream="customers") == []
    assert ledger.waiting_failures("account-2") == []
    ledger.mark_delivered(PEOPLE, [Delivered("ada@example.com", fingerprint(payload))])
    assert ledger.waiting_failures(PEOPLE.account) == []
    assert ledger.clear_failures(PEOPLE, ["bob@example.com"]) == 1
    assert ledger.waiting_failures(PEOPLE.account, retryable_only=False) == []


def test_failures_come_back_oldest_first_across_streams(ledger: SyncLedger) -> None:
    tags = Scope(PEOPLE.account, "add_tag", "tags")
    ledger.mark_failed(tags, [Failure(identity="t1", payload={"tag": "a"}, reason="person not there yet", status=404)])
    ledger.mark_failed(PEOPLE, [Failure(identity="p1", payload={"email": "p1"}, reason="503", status=503)])
    assert [(f.scope, f.identity) for f in ledger.waiting_failures(PEOPLE.account)] == [(tags, "t1"), (PEOPLE, "p1")]
    assert [f.identity for f in ledger.waiting_failures(PEOPLE.account, destination="add_tag")] == ["t1"]


# -- status and forget ---------------------------------------------------------------------------------------


def test_status_counts_records_and_failures_per_stream(ledger: SyncLedger) -> None:
    ledger.mark_delivered(PEOPLE, people(3))
    ledger.mark_failed(
        PEOPLE, [Failure(identity=f"x{n}", payload={}, reason="Encharge answered 503", status=503) for n in range(2)]
    )
    ledger.mark_failed(PEOPLE, [Failure(identity="y", payload={}, reason="timed out")])
    [row] = ledger.status()
    assert (row.scope, row.records, row.failures_waiting) == (PEOPLE, 3, 3)
    assert list(row.reasons.items()) == [("Encharge answered 503", 2), ("timed out", 1)]
    assert row.last_delivery is not None
    assert ledger.forget(stream="people") == 6
    assert ledger.status() == []


def test_forget_needs_something_to_forget(ledger: SyncLedger) -> None:
    with pytest.raises(LedgerError, match="forget needs"):
        ledger.forget()


def test_forget_narrows_by_every_choice_given(ledger: SyncLedger) -> None:
    scopes = [
        Scope(account, destination, stream)
        for account in ("account-1", "account-2")
        for destination in ("create_or_update_person", "add_tag")
        for stream in ("people", "customers")
    ]
    for scope in scopes:
        ledger.mark_delivered(scope, people(2))
        ledger.mark_failed(scope, [Failure(identity="x", payload={}, reason="503", status=503)])
    assert ledger.forget(account="account-2", destination="add_tag", stream="people") == 3
    assert ledger.forget(account="account-1", stream="customers") == 6
    left = {row.scope: (row.records, row.failures_waiting) for row in ledger.status()}
    assert left == {
        scope: (2, 1)
        for scope in scopes
        if scope not in {Scope("account-2", "add_tag", "people")}
        and not (scope.account == "account-1" and scope.stream == "customers")
    }
    assert [f.scope.destination for f in ledger.waiting_failures("account-2", stream="people")] == [
        "create_or_update_person"
    ]


def test_failures_go_when_their_records_do_whatever_their_count(ledger: SyncLedger) -> None:
    """Deliveries, removals and clearing take failures off in chunks (a SQLite statement holds 100 identities,
    a PostgreSQL one 1,000): none is left behind past a chunk's end."""
    many = [f"person-{n}@example.com" for n in range(2_345)]
    ledger.mark_failed(
        PEOPLE,
        [Failure(identity=identity, payload={"n": n}, reason="503", status=503) for n, identity in enumerate(many)],
    )
    assert len(ledger.waiting_failures(PEOPLE.account)) == len(many)
    ledger.mark_delivered(PEOPLE, [Delivered(identity, "f") for identity in many[:1_234]])
    assert {f.identity for f in ledger.waiting_failures(PEOPLE.account)} == set(many[1_234:])
    assert ledger.clear_failures(PEOPLE, many[1_234:2_000]) == 2_000 - 1_234
    ledger.mark_failed(PEOPLE, [Failure(identity=identity, payload={}, reason="503") for identity in many[:1_100]])
    assert ledger.remove(PEOPLE, many) == 1_234
    assert ledger.waiting_failures(PEOPLE.account) == []
    assert ledger.known(PEOPLE) == {}


def test_a_ledger_opened_read_only_writes_nothing(ledger_url: str) -> None:
    """A dry run reads the ledger a real run wrote, and every write is refused in one line, even in a scope it
    has just read."""
    with SyncLedger.open(ledger_url) as ledger:
        ledger.mark_delivered(PEOPLE, people(2))
        ledger.mark_failed(PEOPLE, [Failure(identity="x", payload={}, reason="503")])
        ledger.remember_account("digest-1", "41@api.example")
    with SyncLedger.open(ledger_url, read_only=True) as ledger:
        assert len(ledger.lookup(PEOPLE, [row.identity for row in people(2)])) == 2
        for write in (
            lambda: ledger.mark_delivered(PEOPLE, people(3)),
            lambda: ledger.remove(PEOPLE, ["x"]),
            lambda: ledger.clear_failures(PEOPLE, ["x"]),
            lambda: ledger.forget(stream="people"),
            lambda: ledger.mark_failed(PEOPLE, [Failure(identity="y", payload={}, reason="503")]),
            lambda: ledger.remember_account("digest-1", "42@api.example"),
        ):
            with pytest.raises(LedgerError, match="opened read-only: nothing may be written"):
                write()
    with SyncLedger.open(ledger_url, read_only=True) as ledger:
        assert [(row.records, row.failures_waiting) for row in ledger.status()] == [(2, 1)]
        assert ledger.account_for("digest-1") == "41@api.example"


def test_the_store_is_chosen_by_the_url(tmp_path: Path, postgres_url: str) -> None:
    from target_encharge.ledger.postgres import PostgresLedger
    from target_encharge.ledger.sqlite import SQLiteLedger

    for url in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        with SyncLedger.open(url) as ledger:
            assert isinstance(ledger, SQLiteLedger)
    with SyncLedger.open(postgres_url) as ledger:
        assert isinstance(ledger, PostgresLedger)
    with pytest.raises(TypeError):
        SyncLedger(locate(str(tmp_path / "c.db")), timeout=1, read_only=False)  # the interface: no store of its own


def test_sqlite_reads_and_writes_a_current_ledger_through_the_driver_alone(tmp_path: Path) -> None:
    """A third of the command's start-up is importing SQLAlchemy: on a current SQLite ledger, every read and
    write goes through the driver (SQLAlchemy only creates or migrates the tables)."""
    url = str(tmp_path / "ledger.db")
    SyncLedger.open(url).close()
    script = textwrap.dedent("""
        import sys
        from target_encharge.ledger import Delivered, Failure, Scope, SyncLedger
        scope = Scope("a", "create_or_update_person", "people")
        with SyncLedger.open(sys.argv[1]) as ledger:
            ledger.mark_delivered(scope, [Delivered("p1", "f", tags=frozenset({"vip"})), Delivered("p2", "f")])
            ledger.mark_failed(scope, [Failure(identity="p3", payload={"n": 1}, reason="503")])
            ledger.remember_account("digest", "a")
            assert ledger.lookup(scope, ["p1"])["p1"].tags == frozenset({"vip"})
            assert len(ledger.known(scope)) == 2 and ledger.fingerprints(scope, ["p2"]) == {"p2": "f"}
            assert [f.identity for f in ledger.waiting_failures("a")] == ["p3"] and ledger.account_for("digest") == "a"
            assert ledger.status()[0].records == 2 and ledger.clear_failures(scope, ["p3"]) == 1
            assert ledger.remove(scope, ["p1"]) == 1 and ledger.forget(account="a") == 1
        with SyncLedger.open(sys.argv[1], read_only=True) as ledger:
            assert ledger.status() == []
        print(sorted(name for name in sys.modules if name.split(".")[0] == "sqlalchemy"))
    """)
    run = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# -- concurrency ---------------------------------------------------------------------------------------------


def test_threads_write_and_read_one_ledger_at_once(ledger: SyncLedger) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        scope = Scope(PEOPLE.account, PEOPLE.destination, f"stream-{worker % 2}")
        try:
            for batch in range(20):
                rows = [Delivered(f"p{worker}-{batch}-{n}", f"f{worker}") for n in range(25)]
                ledger.mark_delivered(scope, rows)
                assert len(ledger.lookup(scope, [row.identity for row in rows])) == 25
                ledger.mark_failed(scope, [Failure(identity=f"shared-{batch}", payload={"w": worker}, reason="503")])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(row.records for row in ledger.status()) == 6 * 20 * 25
    assert sum(row.failures_waiting for row in ledger.status()) == 2 * 20  # one per shared identity and stream


WRITER = textwrap.dedent("""
    import sys
    from target_encharge.ledger import Delivered, Failure, Scope, SyncLedger
    url, account, stream = sys.argv[1:4]
    scope, shared = Scope(account, "create_or_update_person", stream), Scope("shared", "create_or_update_person", "all")
    with SyncLedger.open(url, timeout=60) as ledger:
        for batch in range(40):
            ledger.mark_delivered(scope, [Delivered(f"{stream}-{batch}-{n}", account) for n in range(50)])
            ledger.mark_delivered(shared, [Delivered(f"same-{n}", account) for n in range(batch, batch + 50)])
            ledger.mark_failed(shared, [Failure(identity=f"fail-{n}", payload={"by": account}, reason="503")
                                        for n in range(10)])
            assert len(ledger.lookup(scope, [f"{stream}-{batch}-{n}" for n in range(50)])) == 50
""")


def test_two_processes_share_one_ledger(ledger_url: str) -> None:
    SyncLedger.open(ledger_url).close()  # created once, as the first pipeline would
    runs = [
        subprocess.Popen([sys.executable, "-c", WRITER, ledger_url, account, stream], stderr=subprocess.PIPE, text=True)
        for account, stream in (("account-1", "people"), ("account-2", "customers"))
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr
    with SyncLedger.open(ledger_url) as ledger:
        for account, stream in (("account-1", "people"), ("account-2", "customers")):
            known = ledger.known(Scope(account, "create_or_update_person", stream))
            assert len(known) == 40 * 50
            assert {entry.fingerprint for entry in known.values()} == {account}
        shared = Scope("shared", "create_or_update_person", "all")
        assert len(ledger.known(shared)) == 40 + 49
        [failures] = [row for row in ledger.status() if row.scope == shared]
        assert failures.failures_waiting == 10
        assert {f.attempts for f in ledger.waiting_failures("shared")} == {80}


def test_many_lookups_and_writes_in_chunks(ledger: SyncLedger) -> None:
    """100,000 identities looked up and written in chunks of 1,000, as an hourly run of 100,000 people does."""
    total, chunk = 100_000, 1_000
    for start in range(0, total, chunk):
        rows = [Delivered(f"person-{n}@example.com", "f") for n in range(start, start + chunk)]
        assert ledger.lookup(PEOPLE, [row.identity for row in rows]) == {}
        ledger.mark_delivered(PEOPLE, rows)
    found = ledger.lookup(PEOPLE, (f"person-{n}@example.com" for n in range(0, total, 7)))
    assert len(found) == len(range(0, total, 7))
    for start in range(0, total, chunk):  # the unchanged rerun: every fingerprint found
        wanted = [f"person-{n}@example.com" for n in range(start, start + chunk)]
        assert ledger.fingerprints(PEOPLE, wanted) == dict.fromkeys(wanted, "f")
    assert ledger.status()[0].records == total


# -- schema versions -----------------------------------------------------------------------------------------


def _raw_engine(ledger_url: str) -> sa.Engine:
    """The ledger's database opened directly, as an older or a newer target-encharge would have left it."""
    return locate(ledger_url).engine(timeout=5)


def test_a_ledger_from_a_newer_version_is_refused(ledger_url: str) -> None:
    SyncLedger.open(ledger_url).close()
    engine = _raw_engine(ledger_url)
    with engine.begin() as connection:
        connection.execute(schema.meta.update().values(value=str(schema.SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(LedgerError, match="newer target-encharge.*upgrade target-encharge"):
        SyncLedger.open(ledger_url)
    with pytest.raises(LedgerError, match="newer"):
        SyncLedger.open(ledger_url, read_only=True)


@pytest.mark.parametrize("older", [1, 2, 3])
def test_a_ledger_from_an_older_version_is_migrated_keeping_its_entries(ledger_url: str, older: int) -> None:
    """Versions 1 to 3 kept each delivery's source key (indexed from version 2), which nothing read: migrated, a
    ledger keeps its entries, tags and ids, and loses that column and its index."""
    engine = _raw_engine(ledger_url)
    with engine.begin() as connection:
        schema.migrate(connection, found=0, to=older)
        connection.execute(
            schema.scopes.insert().values(
                id=1, account=PEOPLE.account, destination=PEOPLE.destination, stream=PEOPLE.stream
            )
        )
        connection.execute(
            sa.text(
                f"INSERT INTO {schema.deliveries.name} (scope_id, identity, fingerprint, source_key, delivered_at, "
                "encharge_id, tags) VALUES (1, 'ada@example.com', 'f1', :key, '2024-05-01T12:00:00.000000+00:00', "
                "'enc-1', :tags)"
            ),
            {"key": canonical_json({"id": 1}), "tags": canonical_json(["vip"])},
        )
    with SyncLedger.open(ledger_url) as ledger:
        ada = ledger.lookup(PEOPLE, ["ada@example.com"])["ada@example.com"]
        assert (ada.fingerprint, ada.encharge_id, ada.tags) == ("f1", "enc-1", frozenset({"vip"}))
        ledger.mark_delivered(PEOPLE, [Delivered("bob@example.com", "f2")])
        assert set(ledger.known(PEOPLE)) == {"ada@example.com", "bob@example.com"}
    inspector = sa.inspect(engine)
    assert "source_key" not in {column["name"] for column in inspector.get_columns(schema.deliveries.name)}
    assert not any("source_key" in index["name"] for index in inspector.get_indexes(schema.deliveries.name))
    with engine.connect() as connection:
        assert schema.stored_version(connection) == schema.SCHEMA_VERSION
    engine.dispose()


def test_reading_an_older_ledger_migrates_nothing_and_knows_no_account(ledger_url: str) -> None:
    """A dry run on a ledger an older target-encharge wrote (version 2: no accounts table yet) reads its entries
    as they are and knows no account for a key, without creating the table."""
    engine = _raw_engine(ledger_url)
    with engine.begin() as connection:
        schema.migrate(connection, found=0, to=2)
        connection.execute(
            schema.scopes.insert().values(
                id=1, account=PEOPLE.account, destination=PEOPLE.destination, stream=PEOPLE.stream
            )
        )
        connection.execute(
            schema.deliveries.insert().values(
                scope_id=1,
                identity="ada@example.com",
                fingerprint="f1",
                delivered_at="2024-05-01T12:00:00.000000+00:00",
            )
        )
    with SyncLedger.open(ledger_url, read_only=True) as ledger:
        assert ledger.account_for("digest-1") is None
        assert ledger.fingerprints(PEOPLE, ["ada@example.com"]) == {"ada@example.com": "f1"}
    with engine.connect() as connection:
        assert schema.stored_version(connection) == 2
        assert not sa.inspect(connection).has_table(schema.accounts.name)
    engine.dispose()


def test_reading_an_absent_ledger_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with SyncLedger.open(str(path), read_only=True) as ledger:
        assert ledger.status() == []
        assert ledger.lookup(PEOPLE, ["ada@example.com"]) == {}
        with pytest.raises(LedgerError, match="read-only"):
            ledger.mark_delivered(PEOPLE, people(1))
    assert not path.exists()


# -- a ledger that cannot be used ----------------------------------------------------------------------------


def assert_one_masked_line(error: LedgerError, url: str, password: str | None = None) -> str:
    message = str(error)
    assert isinstance(error, ConfigError)
    assert "\n" not in message
    assert message.startswith(f"ledger_url {mask_url(url)}")
    if password:
        assert password not in message
        assert password not in repr(error.__cause__) + repr(error.__context__ if not error.__suppress_context__ else "")
        assert "://***@" in message  # the user information masked as a whole
    return message


def test_mask_url_hides_every_password() -> None:
    assert (
        mask_url("postgresql://user:s3cr@t/x@db.example:5432/ledger") == "postgresql://***@db.example:5432/ledger"
    )  # the user information as a whole (issue 23)
    assert mask_url("postgresql://user:pw@host/db?sslmode=require") == "postgresql://***@host/db?sslmode=require"
    assert mask_url("postgresql://host/db?user=u&password=pw&x=1") == "postgresql://host/db?user=u&password=***&x=1"
    assert mask_url("postgresql://user@host/db") == "postgresql://***@host/db"
    assert mask_url("/var/lib/ledger.db") == "/var/lib/ledger.db"


def test_an_unreachable_server(unused_port: int) -> None:
    url = f"postgresql://ledger:{PASSWORD}@127.0.0.1:{unused_port}/ledger"
    with pytest.raises(LedgerError) as caught:
        SyncLedger.open(url, timeout=2)
    assert "cannot reach the server" in assert_one_masked_line(caught.value, url, PASSWORD)


def test_wrong_credentials(postgres_url: str) -> None:
    wrong = "wrong-" + PASSWORD
    url = postgres_url.replace(PASSWORD, wrong)
    with pytest.raises(LedgerError) as caught:
        SyncLedger.open(url)
    message = assert_one_masked_line(caught.value, url, wrong)
    assert "refused the user name or password" in message
    assert PASSWORD not in message


def test_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database, whatever its name says\n" * 200)
    with pytest.raises(LedgerError) as caught:
        SyncLedger.open(str(path))
    assert "corrupt" in assert_one_masked_line(caught.value, str(path))
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was for the user to look at


def test_a_file_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SyncLedger.open(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerError) as caught:
            SyncLedger.open(str(path), timeout=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert "locked by another process" in assert_one_masked_line(caught.value, str(path))
    SyncLedger.open(str(path), timeout=0.5).close()  # usable again once the other process is gone


def test_an_unknown_scheme_and_a_missing_directory(tmp_path: Path) -> None:
    url = f"mysql://ledger:{PASSWORD}@db.example/ledger"
    with pytest.raises(LedgerError) as caught:
        SyncLedger.open(url)
    assert "unknown scheme 'mysql'" in assert_one_masked_line(caught.value, url, PASSWORD)
    missing = str(tmp_path / "no-such-dir" / "ledger.db")
    with pytest.raises(LedgerError, match="does not exist"):
        SyncLedger.open(missing)
    with pytest.raises(LedgerError, match="in-memory"):
        SyncLedger.open("sqlite://")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the commands --------------------------------------------------------------------------------------------


def write_config(tmp_path: Path, ledger_url: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"api_key": "not-shown", "ledger_url": ledger_url}))
    return str(path)


def test_status_command_shows_a_table_without_the_password(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with SyncLedger.open(ledger_url) as ledger:
        ledger.mark_delivered(PEOPLE, people(3))
        ledger.mark_failed(PEOPLE, [Failure(identity="x", payload={}, reason="Encharge answered 503", status=503)])
    assert commands.main(["status", "--config", write_config(tmp_path, ledger_url)]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    assert mask_url(ledger_url) in out
    lines = out.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("account "))
    row = lines[header + 1].split()
    assert row[:4] == ["account-1", "create_or_update_person", "people", "3"] and row[-1] == "1"
    assert "1 x Encharge answered 503" in out


def test_forget_command_removes_one_stream(
    ledger_url: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = Scope(PEOPLE.account, PEOPLE.destination, "customers")
    with SyncLedger.open(ledger_url) as ledger:
        ledger.mark_delivered(PEOPLE, people(3))
        ledger.mark_delivered(customers, people(2))
    monkeypatch.setenv(commands.ENVIRONMENT_URL, ledger_url)  # as Meltano passes it
    assert commands.main(["forget", "--stream", "people"]) == 0
    assert "Forgot 3 entries (stream people)" in capsys.readouterr().out
    with SyncLedger.open(ledger_url) as ledger:
        assert ledger.known(PEOPLE) == {}
        assert len(ledger.known(customers)) == 2


def test_forget_command_without_a_choice_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert commands.main(["forget", "--config", write_config(tmp_path, str(tmp_path / "l.db"))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "forget needs --stream, --destination or --account" in err


def test_commands_name_a_bad_ledger_in_one_line(
    tmp_path: Path, unused_port: int, capsys: pytest.CaptureFixture
) -> None:
    url = f"postgresql://ledger:{PASSWORD}@127.0.0.1:{unused_port}/ledger"
    assert commands.main(["status", "--config", write_config(tmp_path, url)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ledger_url postgresql://***@" in err and PASSWORD not in err


def dead_letter(stream: str, record: dict) -> str:
    return json.dumps(
        {
            "stream": stream,
            "identifiers": {"email": record.get("email")},
            "reason": "400 invalid",
            "status": 400,
            "response": {"error": {"message": "invalid"}},
            "record": record,
            "time": "2024-05-01T12:00:00Z",
        }
    )


def test_replay_prints_singer_messages_to_pipe_back(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    letters = tmp_path / "dead.jsonl"
    letters.write_text(
        "\n".join(
            [  # a number with more digits than a float holds, as the target writes it
                dead_letter("people", {"email": "ada@example.com", "score": 0}).replace(
                    '"score": 0', '"score": 12345678901234567890.123'
                ),
                dead_letter("tags", {"email": "ada@example.com", "tag": "vip"}),
                dead_letter("people", {"email": "bob@example.com"}),
            ]
        )
        + "\n"
    )
    assert commands.main(["replay", str(letters)]) == 0
    out = capsysbinary.readouterr().out.decode()
    messages = [json.loads(line, parse_float=Decimal) for line in out.split("\n") if line]
    assert [(m["type"], m["stream"]) for m in messages] == [
        ("SCHEMA", "people"),
        ("RECORD", "people"),
        ("SCHEMA", "tags"),
        ("RECORD", "tags"),
        ("RECORD", "people"),
    ]
    assert messages[1]["record"] == {"email": "ada@example.com", "score": Decimal("12345678901234567890.123")}
    assert messages[0]["key_properties"] == [] and messages[0]["schema"]["type"] == "object"


def test_replay_refuses_a_bad_line_before_printing_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    letters = tmp_path / "dead.jsonl"
    letters.write_text(dead_letter("people", {"email": "ada@example.com"}) + "\n{not json\n")
    assert commands.main(["replay", str(letters)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"target-encharge-ledger: error: {letters} line 2: not JSON"


def test_the_console_script_reads_the_environment(tmp_path: Path) -> None:
    url = str(tmp_path / "ledger.db")
    with SyncLedger.open(url) as ledger:
        ledger.mark_delivered(PEOPLE, people(2))
    script = Path(sys.executable).parent / "target-encharge-ledger"
    assert script.exists(), "reinstall the project (pip install -e .) to get the target-encharge-ledger command"
    run = subprocess.run(
        [str(script), "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, commands.ENVIRONMENT_URL: url},
    )
    assert run.returncode == 0, run.stderr
    assert "account-1" in run.stdout and "people" in run.stdout


def test_a_key_is_known_by_its_digest_and_maps_to_its_account(ledger: SyncLedger) -> None:
    assert ledger.account_for("digest-1") is None
    ledger.remember_account("digest-1", "41@api.example")
    ledger.remember_account("digest-1", "42@api.example")  # the key moved to another account
    assert ledger.account_for("digest-1") == "42@api.example"
    assert ledger.account_for("digest-2") is None
