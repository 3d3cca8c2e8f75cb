"""Shared test fixtures: a fresh local Encharge sandbox per test, and its keys."""

from __future__ import annotations

from typing import Iterator

import pytest

from target_encharge.sandbox import Sandbox

API_KEY = "sandbox-api-key"
WRITE_KEY = "sandbox-write-key"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox on a free loopback port, with the default keys and schemas; stopped after the test.

    Seeded: the faults a test sets fall on the same draws in every run, so no assertion rests on chance
    (with seed 0 and an error rate of 0.3 or more, one of the first three calls after the start-up check is
    refused)."""
    with Sandbox(api_key=API_KEY, write_key=WRITE_KEY, seed=0) as sb:
        yield sb
