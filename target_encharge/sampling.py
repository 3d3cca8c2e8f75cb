"""`test_send`: which records a test send handles (the first of each stream)."""

from __future__ import annotations

import threading


class TestSendSample:
    """`test_send`: only the first record of each stream is sent (when on)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, *, on: bool) -> None:
        self.on = on
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled: always, but in a test send only each stream's first."""
        if not self.on:
            return True
        with self._lock:
            if stream in self._seen:
                return False
            self._seen.add(stream)
            return True
