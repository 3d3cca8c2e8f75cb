"""Signals that come while the command is still starting (importing singer-sdk takes about a second): remembered
here, so that the target, once built, acts on them as on any SIGTERM or SIGINT instead of dying unannounced."""

from __future__ import annotations

import signal
import types

_received: list[int] = []


def _remember(signum: int, _frame: types.FrameType | None) -> None:
    _received.append(signum)


def listen() -> None:
    """Remember SIGTERM and SIGINT until the target installs its own handlers."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _remember)


def take() -> list[int]:
    """The signals that came before the target was listening (each told once)."""
    received = list(_received)
    _received.clear()
    return received
