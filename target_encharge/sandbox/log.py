"""The request log: every request the sandbox answered (or dropped), bounded in entries and in body memory.

Counts per endpoint and status are kept apart from the entries, so they stay exact after old entries go.
A write is a POST, PUT, PATCH or DELETE: what a sync test counts to prove an unchanged rerun sent nothing.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

MAX_ENTRIES = 200_000
#: Raw bytes of request bodies kept as parsed JSON; past this, the oldest logged bodies become None.
MAX_BODY_BYTES = 16 * 1024 * 1024
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class RequestLog:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._bodies: deque[tuple[dict[str, Any], int]] = deque()
        self._body_bytes = 0
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, entry: dict[str, Any], endpoint: str, body_size: int) -> None:
        status = "dropped" if entry["status"] is None else str(entry["status"])
        with self._lock:
            self._entries.append(entry)
            self._counts[(endpoint, status)] += 1
            if entry["body"] is not None and body_size:
                self._bodies.append((entry, body_size))
                self._body_bytes += body_size
                while self._body_bytes > self.max_body_bytes and len(self._bodies) > 1:
                    old, size = self._bodies.popleft()
                    old["body"] = None
                    self._body_bytes -= size

    def entries(self, limit: int | None = None, *, writes_only: bool = False) -> list[dict[str, Any]]:
        """The last `limit` entries (all when None), only the writes when asked."""
        with self._lock:
            entries = list(self._entries)
        if writes_only:
            entries = [entry for entry in entries if entry["method"] in WRITE_METHODS]
        return entries[-limit:] if limit else entries

    def writes(self) -> dict[str, int]:
        """Write requests per endpoint ("POST /v1/people"), whatever their answer; exact, however old."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (endpoint, _status), n in self._counts.items():
                if endpoint.split(" ", 1)[0] in WRITE_METHODS:
                    totals[endpoint] += n
        return dict(sorted(totals.items()))

    def counts(self) -> list[tuple[str, str, int]]:
        """(endpoint, status, count) rows, sorted by endpoint then status."""
        with self._lock:
            return sorted((endpoint, status, n) for (endpoint, status), n in self._counts.items())

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bodies.clear()
            self._body_bytes = 0
            self._counts.clear()
