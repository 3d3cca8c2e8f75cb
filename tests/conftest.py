"""Shared test fixtures: a fresh local Encharge sandbox per test, and its keys; the test tiers' plumbing.

Tiers: most tests run the command's entry point in this process (tests/helpers.py); a test marked `subprocess`
runs it as a process of its own (signals, a closed stdout, the locale, `--config ENV`); the slow end-to-end ones
(Meltano, soak, kill and resume) are marked `slow`: `pytest -m "not slow"` is the quick tier. Hypothesis runs the
`dev` profile (few examples) unless CI=true or HYPOTHESIS_PROFILE=ci selects the thorough `ci` one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from helpers import API_KEY, RUNNER_VARIABLE, WRITE_KEY
from hypothesis import HealthCheck, settings
from mariadb import mariadb_database, mariadb_server  # noqa: F401 (fixtures: one server per worker, on first use)
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures: one server per worker, for every file)

from target_encharge.sandbox import Sandbox

__all__ = ["API_KEY", "WRITE_KEY"]

_QUIET_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_QUIET_HEALTH)
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=_QUIET_HEALTH, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox on a free loopback port, with the default keys and schemas; stopped after the test.

    Seeded: the faults a test sets fall on the same draws in every run, so no assertion rests on chance
    (with seed 0 and an error rate of 0.3 or more, one of the first three calls after the start-up check is
    refused)."""
    with Sandbox(api_key=API_KEY, write_key=WRITE_KEY, seed=0) as sb:
        yield sb


@pytest.fixture(autouse=True)
def _a_working_directory_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts in an empty directory of its own: what a run leaves in its working directory by default
    (the sync ledger, the dead-letter file) is never met by another test, on any worker, nor by a later session."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _runner_for_the_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked `subprocess` runs the command as a process of its own (helpers.run_target)."""
    if request.node.get_closest_marker("subprocess"):
        monkeypatch.setenv(RUNNER_VARIABLE, "process")


# The tests that take from several seconds to a minute, longest first (measured on 2 cores). They go first, so
# that none of them starts last and leaves the other workers idle at the end: pyproject.toml's `--dist load
# --maxschedchunk 1` hands the tests out in this order to whichever worker is free, but at the start two to each
# worker (a worker holds the next test while it runs one), so each long test is followed by a short one.
LONGEST_FIRST = [
    "test_meltano.py::test_meltano_run_delivers_every_demo_record_and_saves_exactly_the_taps_state",
    "test_responses.py::test_the_state_summary_stays_small_for_100k_records_in_many_streams",
    "test_ledger_store.py::test_many_lookups_and_writes_in_chunks",
    "test_soak.py::test_five_thousand_records_under_500s_drops_and_429s_all_arrive_once_and_are_counted_exactly",
    "test_adversarial.py::test_a_state_backlog_keeps_only_the_latest_state",
    "test_meltano.py::test_an_hourly_rerun_under_meltano_sends_no_write_and_ledger_status_shows_the_stream",
    "test_meltano.py::test_with_response_output_state_meltano_saves_the_taps_state_plus_one_bounded_summary",
    "test_resume.py::test_a_pipeline_from_tap_jsonl_killed_mid_run_and_rerun_from_its_last_state_loses_nothing",
    "test_meltano.py::test_a_stream_map_set_through_meltano_changes_what_encharge_receives",
    "test_meltano.py::test_meltano_invoke_check_passes_for_this_project_and_names_a_bad_key",
    "test_resume.py::test_a_target_killed_after_any_state_resumes_from_it_without_losing_a_record",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}

    def name(item: pytest.Item) -> str:
        return f"{item.path.name}::{getattr(item, 'originalname', item.name)}"

    long = sorted((item for item in items if name(item) in rank), key=lambda item: rank[name(item)])
    short = [item for item in items if name(item) not in rank]
    interleaved = [each for pair in zip(long, short, strict=False) for each in pair]
    items[:] = interleaved + long[len(interleaved) // 2 :] + short[len(interleaved) // 2 :]
