"""Overlapping runs on one ledger (issue 23): a lease per account, destination and stream. Two runs started together
deliver each event with an id once; a second run waits for the first, or stops with one line naming the holder; a
run killed with kill -9 leaves a lease that expires by itself; a run paused past its lease stops before writing
again; dry runs read without a lease; `target-encharge-ledger status` shows who holds what.

Each runs on SQLite and on a real PostgreSQL server (tests/postgres.py starts one), through the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers import record, run_target, sandbox_config, schema, target_command

from target_encharge.ledger import Delivered, Scope, SyncLedger
from target_encharge.ledger.lease import LeaseHeldError, LeaseLostError
from target_encharge.sandbox import Sandbox

EVENT_PROPS = {"event_id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


def events(n: int) -> list[dict]:
    return [schema("events", EVENT_PROPS, ["event_id"])] + [
        record("events", {"event_id": f"e{i}", "name": "Signed up", "email": f"p{i}@example.com"}) for i in range(n)
    ]


def lines(messages: t.Iterable[dict]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def config_file(tmp_path: Path, name: str, config: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def start(config: Path, cwd: Path) -> subprocess.Popen:
    """The real command, its input to be written by the test (stdin kept open: the run waits for more)."""
    return subprocess.Popen(
        [*target_command(), "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )


def feed(process: subprocess.Popen, messages: t.Iterable[dict]) -> None:
    """Write ``messages`` to a started run's input and flush them (its stdin stays open)."""
    process.stdin.write(lines(messages))  # type: ignore[union-attr]
    process.stdin.flush()  # type: ignore[union-attr]


def held_by(ledger_url: str, pid: int, timeout: float = 30) -> Scope:
    """Wait until the process ``pid`` holds a lease; its scope."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with SyncLedger.open(ledger_url, read_only=True) as ledger:
            for lease in ledger.leases():
                if lease.holder.pid == pid:
                    return lease.scope
        time.sleep(0.05)
    raise AssertionError(f"process {pid} took no lease within {timeout} s")


def status(ledger_url: str) -> str:
    return subprocess.run(
        [str(Path(sys.executable).parent / "target-encharge-ledger"), "status"],
        env={**os.environ, "TARGET_ENCHARGE_LEDGER_URL": ledger_url},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def event_ids(sandbox: Sandbox) -> list[str]:
    return [event["properties"]["event_id"] for event in sandbox.events()]


def test_two_runs_started_together_deliver_each_event_once(sandbox, ledger_url, tmp_path):
    sandbox.set_faults(latency_ms=2)  # the first run is still sending when the second opens the stream
    config = config_file(
        tmp_path, "config.json", sandbox_config(sandbox, ledger_url=ledger_url, endpoint="track_event")
    )
    runs = [start(config, tmp_path) for _ in range(2)]
    data = lines(events(1000))
    answers: list[tuple[bytes, bytes]] = [(b"", b"")] * 2

    def feed(n: int) -> None:
        answers[n] = runs[n].communicate(data, timeout=180)

    feeders = [threading.Thread(target=feed, args=(n,)) for n in range(2)]
    for feeder in feeders:
        feeder.start()
    for feeder in feeders:
        feeder.join()
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-2000:] for _, err in answers]
    ids = event_ids(sandbox)
    assert sorted(ids) == sorted(f"e{i}" for i in range(1000))  # each once: the second run found them delivered
    assert any(b"being synced by another run" in err for _, err in answers)  # one of them waited for the other


def test_a_second_run_stops_with_one_line_naming_the_holder_and_status_shows_it(sandbox, ledger_url, tmp_path):
    settings = sandbox_config(sandbox, ledger_url=ledger_url, endpoint="track_event")
    first = start(config_file(tmp_path, "config.json", settings), tmp_path)
    try:
        feed(first, events(5))
        scope = held_by(ledger_url, first.pid)
        assert scope.stream == "events"
        shown = status(ledger_url)
        assert "Held by a run now (lease):" in shown
        assert f"/ events: host {os.uname().nodename}, process {first.pid}, since " in shown

        started = time.monotonic()
        second = run_target({**settings, "lease_wait": 1}, events(5))
        assert second.returncode == 1
        assert 1 <= time.monotonic() - started < 30
        assert second.error_line.startswith("target-encharge: error: ledger_url ")
        assert "stream 'events' is being synced by another run" in second.error_line
        assert f"process {first.pid}, since " in second.error_line
        assert "waited 1 s (lease_wait)" in second.error_line
        assert second.stdout == ""  # no STATE: nothing of it was done

        dry = run_target({**settings, "dry_run": True}, events(5))  # reads without a lease: never waits
        assert dry.returncode == 0, dry.stderr
        assert "being synced by another run" not in dry.stderr
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert sorted(event_ids(sandbox)) == sorted(f"e{i}" for i in range(5))
    assert "Held by a run now" not in status(ledger_url)  # let go at the end of the run


def test_sigterm_while_waiting_for_a_lease_stops_the_run_at_once(sandbox, ledger_url, tmp_path):
    settings = sandbox_config(sandbox, ledger_url=ledger_url, endpoint="track_event")
    first = start(config_file(tmp_path, "config.json", settings), tmp_path)
    try:
        feed(first, events(5))
        held_by(ledger_url, first.pid)
        second = start(config_file(tmp_path, "second.json", {**settings, "lease_wait": 120}), tmp_path)
        feed(second, events(5))
        said = b""
        while b"waiting up to 120 s" not in said:  # (its log goes line by line: it is waiting now)
            line = second.stderr.readline()  # type: ignore[union-attr]
            assert line, said.decode()
            said += line
        started = time.monotonic()
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=60)
        assert time.monotonic() - started < 10  # not the 120 s of lease_wait (a container is killed after 10)
        assert second.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
        assert b"stopped by SIGTERM" in err
        assert out == b""  # no STATE: nothing of it was done
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert sorted(event_ids(sandbox)) == sorted(f"e{i}" for i in range(5))  # the stopped run sent nothing


def test_a_run_killed_with_kill_9_leaves_a_lease_that_expires(sandbox, ledger_url, tmp_path):
    settings = sandbox_config(sandbox, ledger_url=ledger_url, endpoint="track_event", lease_ttl=2)
    killed = start(config_file(tmp_path, "config.json", settings), tmp_path)
    feed(killed, events(5))
    held_by(ledger_url, killed.pid)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    started = time.monotonic()
    after = run_target({**settings, "lease_wait": 60}, events(20))
    assert after.returncode == 0, after.stderr
    assert time.monotonic() - started < 15  # the dead run's lease expired after lease_ttl, not lease_wait
    assert "being synced by another run" in after.stderr
    assert sorted(set(event_ids(sandbox))) == sorted(f"e{i}" for i in range(20))


def test_a_run_paused_past_its_lease_stops_before_writing_again(sandbox, ledger_url, tmp_path):
    settings = sandbox_config(sandbox, ledger_url=ledger_url, endpoint="track_event", lease_ttl=1)
    paused = start(config_file(tmp_path, "config.json", settings), tmp_path)
    try:
        feed(paused, events(5))
        held_by(ledger_url, paused.pid)
        deadline = time.monotonic() + 30
        while len(sandbox.events()) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # its marks written: idle, waiting for input (paused inside a transaction, it would hold
        # the SQLite file's lock, which no lease can take away)
        os.kill(paused.pid, signal.SIGSTOP)  # a machine asleep, a process swapped out: its lease runs out
        time.sleep(1.5)
        other = run_target({**settings, "lease_wait": 30}, events(10))
        assert other.returncode == 0, other.stderr
        os.kill(paused.pid, signal.SIGCONT)
        time.sleep(0.5)  # its renewal finds the lease taken
        feed(paused, events(10)[1:])
    finally:
        os.kill(paused.pid, signal.SIGCONT)
        _, err = paused.communicate(timeout=60)
    assert paused.returncode == 1
    (line,) = [x for x in err.decode().splitlines() if x.startswith("target-encharge: error:")]
    assert "another run took over stream 'events'" in line
    assert "this run stopped before writing again" in line
    assert sorted(event_ids(sandbox)) == sorted(f"e{i}" for i in range(10))  # nothing sent after the loss


def test_a_lost_lease_refuses_the_write_itself(ledger_url):
    """The fencing token: a write after the lease was taken over is refused inside its own transaction."""
    scope = Scope("account", "track_event", "events")
    with SyncLedger.open(ledger_url) as first, SyncLedger.open(ledger_url) as second:
        first.take_lease(scope, ttl=1, wait=0)
        assert first.fingerprints(scope, ["e0"]) == {}  # (on PostgreSQL: the scope read ahead, writes fenced inline)
        opened = first.snapshot(scope, "1")  # (mirror: its snapshot, stamps and planned removals are fenced too)
        with pytest.raises(LeaseHeldError, match="is being synced by another run"):
            second.take_lease(scope, ttl=1, wait=0)
        first._leases._stop.set()  # type: ignore[union-attr]  # its renewal stops, as in a paused process
        second.take_lease(scope, ttl=1, wait=10)

        with pytest.raises(LeaseLostError, match="stopped before writing again"):
            first.mark_delivered(scope, [Delivered("e1", "f")])
        with pytest.raises(LeaseLostError):
            first.fingerprints(scope, ["e1"])  # and before sending: the sift's lookup
        for mirror_write in (
            lambda: first.stamp_seen(scope, opened.id, ["e1"], clear=True),
            lambda: first.plan_removals(scope, [("e0", "left the source")]),
            lambda: first.complete_snapshot(scope, opened.id, "end"),
            lambda: first.snapshot(scope, "2"),
        ):
            with pytest.raises(LeaseLostError):
                mirror_write()
        second.mark_delivered(scope, [Delivered("e2", "f")])
        assert second.fingerprints(scope, ["e1", "e2"]) == {"e2": "f"}
        assert second.planned_removals(scope) == [] and second.completed_snapshots(scope) == []
