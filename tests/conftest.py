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
from postgres import postgres_server, postgres_url  # noqa: F401 (fixtures: one server per worker, for every file)

from target_encharge.sandbox import Sandbox

__all__ = ["API_KEY", "WRITE_KEY"]

_QUIET_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_QUIET_HEALTH)
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=_QUIET_HEALTH,
                          print_blob=True)
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
