"""The run's checkpoint and counts, in-process: a STATE goes out only once every record before it is done (2xx or
failed for good), in order, whatever order the records finish in; the counts add up to the summary table and
the bounded STATE summary a user reads."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from target_encharge.checkpoint import StateGate
from target_encharge.counts import LAST_ERRORS, MAX_STREAMS_IN_STATE, MAX_TEXT, RunCounts

# the STATE gate


def gate() -> tuple[StateGate, list[dict]]:
    released: list[dict] = []
    return StateGate(released.append), released


def test_a_state_waits_until_every_record_before_it_is_done_whatever_order_they_finish_in() -> None:
    states, released = gate()
    first = [states.number() for _ in range(3)]
    states.add_state({"bookmark": 1})
    second = [states.number() for _ in range(2)]
    states.add_state({"bookmark": 2})

    states.done(first[2], first[1])  # the later records of the first group answered first
    assert released == []
    states.done(second[0])  # a record after the first STATE: it releases nothing while record 0 is out
    assert released == []
    states.done(first[0])
    assert released == [{"bookmark": 1}]
    assert states.pending == 1
    states.done(second[1])
    assert released == [{"bookmark": 1}, {"bookmark": 2}]
    assert states.pending == 0


def test_a_state_with_nothing_before_it_goes_out_at_once_and_a_repeat_is_not_sent_again() -> None:
    states, released = gate()
    states.add_state({"bookmark": 1})
    states.add_state({"bookmark": 1})
    assert released == [{"bookmark": 1}]
    states.done(states.number())
    states.add_state({"bookmark": 1})  # the same STATE again, after more records: still the same bookmark
    assert released == [{"bookmark": 1}]


def test_a_backlog_of_states_behind_one_slow_record_keeps_only_the_latest() -> None:
    states, released = gate()
    slow = states.number()
    for n in range(1000):
        states.add_state({"bookmark": n})
    states.done(slow)
    assert released == [{"bookmark": 999}]


def test_a_state_held_back_is_never_released_while_its_records_are_out() -> None:
    states, released = gate()
    seqs = [states.number() for _ in range(5)]
    states.add_state({"bookmark": "end"})
    states.done(*seqs[:4])
    assert released == []
    assert states.pending == 1
    states.release_again()  # the end of a run re-sends the last STATE only when none is held back
    assert released == []
    states.done(seqs[4])
    states.release_again()
    assert released == [{"bookmark": "end"}, {"bookmark": "end"}]


@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_states_come_out_in_order_each_once_its_records_are_all_done(
    records_before: list[int], rnd: random.Random
) -> None:
    """Any number of records before each STATE, finishing in any order: each STATE goes out, in the tap's order,
    exactly when the last record before it is done, and the last STATE always goes out in the end."""
    released: list[tuple[int, int]] = []
    done: set[int] = set()
    states = StateGate(lambda state: released.append((state["n"], len(done))))
    waits = []  # (the STATE's number, how many records came before it)
    for n, count in enumerate(records_before):
        for _ in range(count):
            states.number()
        states.add_state({"n": n})
        waits.append((n, sum(records_before[: n + 1])))
    order = list(range(sum(records_before)))
    rnd.shuffle(order)
    for seq in order:
        done.add(seq)
        states.done(seq)
    numbers = [n for n, _ in released]
    assert numbers == sorted(numbers) and numbers[-1] == len(records_before) - 1
    for n, done_then in released:  # at the moment the last record before it was done, not before, not later
        before = dict(waits)[n]
        assert done_then == (max(order.index(seq) for seq in range(before)) + 1 if before else 0)
    for n in set(range(len(records_before))) - set(numbers):  # only a STATE replaced by the next one is not sent
        assert records_before[n + 1] == 0
    assert states.pending == 0


# the counts


def test_the_summary_table_has_a_row_per_stream_a_total_and_only_the_sync_counts_this_run_had() -> None:
    counts = RunCounts()
    for _ in range(1200):
        counts.record_seen("people")
    for n in range(12):
        counts.call_made("people", retried=n == 0)
    counts.succeeded("people", 1199)
    counts.add("people", "created", 1000)
    counts.add("people", "retried_from_earlier_runs", 3)
    counts.failed("people", {"email": "bad@example.com"}, "422: email is not valid")
    for _ in range(2):
        counts.record_seen("tags")
        counts.call_made("tags", retried=False)
    counts.succeeded("tags", 2)

    assert counts.table().splitlines() == [
        "stream  records  calls  succeeded  failed  retried  created  from_earlier_runs",
        "people    1,200     12      1,199       1        1    1,000                  3",
        "tags          2      2          2       0        0        0                  0",
        "total     1,202     14      1,201       1        1    1,000                  3",
    ]
    assert counts.handled() == (1202, 1)


def test_one_stream_has_no_total_row_and_unchanged_and_skipped_records_count_as_handled() -> None:
    counts = RunCounts()
    for _ in range(4):
        counts.record_seen("people")
    counts.add("people", "unchanged", 2)
    counts.add("people", "skipped", 1)
    counts.call_made("people", retried=False)
    counts.succeeded("people", 1)
    assert counts.table().splitlines() == [
        "stream  records  calls  succeeded  failed  retried  unchanged  skipped",
        "people        4      1          1       0        0          2        1",
    ]
    assert counts.handled() == (4, 0)


def test_the_state_summary_stays_bounded_however_many_streams_and_failures() -> None:
    counts = RunCounts()
    streams = [f"stream_{n:02}" for n in range(MAX_STREAMS_IN_STATE + 5)]
    for stream in streams:
        counts.record_seen(stream)
        counts.failed(stream, {"email": "x" * 1000, **{f"k{n}": n for n in range(10)}}, "reason " * 100)
    summary = counts.summary()
    assert list(summary["streams"]) == streams[:MAX_STREAMS_IN_STATE]
    assert summary["streams"]["stream_00"] == {"records": 1, "calls": 0, "succeeded": 0, "failed": 1, "retried": 0}
    assert summary["other_streams"] == {
        "streams": 5,
        "records": 5,
        "calls": 0,
        "succeeded": 0,
        "failed": 5,
        "retried": 0,
    }
    errors = summary["last_errors"]
    assert [e["stream"] for e in errors] == streams[-LAST_ERRORS:]
    assert all(len(e["reason"]) == MAX_TEXT and len(e["identifiers"]) == 5 for e in errors)
    assert errors[-1]["identifiers"]["email"] == "x" * MAX_TEXT
