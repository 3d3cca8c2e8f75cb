"""Shared test fixtures: a fresh local Encharge sandbox per test, and its keys."""

from __future__ import annotations

from typing import Iterator

import pytest

from target_encharge.sandbox import Sandbox

API_KEY = "sandbox-api-key"
WRITE_KEY = "sandbox-write-key"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox on a free loopback port, with the default keys and schemas; stopped after the test."""
    with Sandbox(api_key=API_KEY, write_key=WRITE_KEY) as sb:
        yield sb
