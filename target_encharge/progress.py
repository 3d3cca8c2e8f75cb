"""What the log tells of the run's progress: a :class:`Progress` line every ``progress_interval`` seconds, and
the lines above and below the summary table at the end."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from target_encharge.checkpoint import StateGate
    from target_encharge.counts import RunCounts
    from target_encharge.jsonl import Lines

logger = logging.getLogger("target_encharge")


class Progress:
    """A log line every ``interval`` seconds on long runs: records handled, records per second, failures, records
    waiting (read, not yet done) and calls in flight."""

    def __init__(
        self, counts: RunCounts, gate: StateGate, interval: float, calls_in_flight: t.Callable[[], int] = lambda: 0
    ) -> None:
        self.counts, self.gate, self.interval, self.calls_in_flight = counts, gate, interval, calls_in_flight
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="encharge-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        last_done, last_time = 0, time.monotonic()
        while not self._stop.wait(self.interval):
            done, failed = self.counts.handled()
            now_ = time.monotonic()
            rate = (done - last_done) / max(now_ - last_time, 1e-9)
            logger.info(
                "Progress: %s records handled (%s/s), %s failed, %s records waiting, %s calls in flight",
                f"{done:,}",
                f"{rate:,.0f}",
                f"{failed:,}",
                f"{self.gate.pending:,}",
                f"{self.calls_in_flight():,}",
            )
            last_done, last_time = done, now_


def summary_title(counts: RunCounts, *, dry_run: bool, test_send: bool) -> str:
    """The line above the summary table: totals, time and rate, and what kind of run it was."""
    done, failed = counts.handled()
    seconds = time.monotonic() - counts.started
    kind = " (dry run: nothing was sent)" if dry_run else ""
    if test_send:
        kind = f" (test send: the first record of each stream; {counts.skipped:,} other records not sent)"
    return (
        f"Summary{kind}: {done:,} records handled in {seconds:.1f}s ({done / max(seconds, 1e-9):,.0f}/s), "
        f"{failed:,} failed"
    )


def dead_letter_line(dead_letters: Lines | None) -> str | None:
    """The summary's pointer to the dead-letter file, when records went there."""
    if dead_letters is None or not dead_letters.written:
        return None
    return f"{dead_letters.written:,} failed record(s) kept in the dead-letter file {dead_letters.shown_path}"
