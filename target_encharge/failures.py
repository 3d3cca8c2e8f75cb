"""Records that failed for good: :class:`FailureLimit` stops the run past ``max_failures``, :class:`FailureLog`
writes them to the log with repeats of a reason counted, not logged one by one."""

from __future__ import annotations

import dataclasses
import logging
import threading

from target_encharge.errors import TooManyFailures

logger = logging.getLogger("target_encharge")

MAX_REASONS_COUNTED = 1000  # distinct failure reasons logged once with a count; beyond, each is logged


def describe(ids: dict) -> str:
    """A record's identifiers for a log line."""
    return "(" + ", ".join(f"{k}={v}" for k, v in ids.items()) + ")" if ids else "(no identifiers)"


@dataclasses.dataclass(frozen=True)
class FailureLimit:
    """`max_failures`: how many records may fail for good before the run stops (-1: no limit)."""

    max_failures: int
    dead_letter_path: str | None = None  # the file the reason to stop points at

    def enforce(self, failures: int) -> None:
        """Stop the run once more records failed for good than ``max_failures`` allows."""
        if self.max_failures >= 0 and failures > self.max_failures:
            where = f"; see the dead-letter file {self.dead_letter_path}" if self.dead_letter_path else ""
            msg = f"{failures} record(s) failed for good, more than max_failures={self.max_failures} allows{where}"
            raise TooManyFailures(msg)


class FailureLog:
    """Failed records in the log: the first of each reason (per stream) in full, the others like it counted and
    told once at the end ("and 4,990 more like this"), not one line each."""

    def __init__(self) -> None:
        self._repeats: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def failed(self, stream: str, ids: dict, reason: str) -> None:
        with self._lock:
            repeats = self._repeats.get((stream, reason))
            if repeats is not None:
                self._repeats[stream, reason] = repeats + 1
                return
            if len(self._repeats) < MAX_REASONS_COUNTED:
                self._repeats[stream, reason] = 0
        logger.error("Record of stream '%s' %s failed: %s", stream, describe(ids), reason)

    def close(self) -> None:
        """The count of each repeated failure, once."""
        with self._lock:
            repeats, self._repeats = self._repeats, {}
        for (stream, reason), count in repeats.items():
            if count:
                logger.error("... and %s more record(s) of stream '%s' like this: %s", f"{count:,}", stream, reason)
