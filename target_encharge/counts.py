"""The run's numbers: :class:`RunCounts` keeps records, calls, successes, failures and retries per stream, and
the last few errors, for the STATE summary and the end-of-run table. Thread-safe: workers settle records while
the reader counts new ones."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import typing as t

LAST_ERRORS = 5  # errors kept in the STATE summary
MAX_STREAMS_IN_STATE = 20  # streams named in the STATE summary; the others are counted together
MAX_TEXT = 200  # characters of a reason or an identifier kept in the STATE summary


@dataclasses.dataclass
class StreamCounts:
    """Per stream: records seen, calls made, records succeeded (of which created and updated, as far as the sync
    ledger knew), unchanged since their last delivery, skipped by the sync mode, removed by mirror, failed, calls
    retried, and records sent again from earlier runs' failures."""

    records: int = 0
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    retried_from_earlier_runs: int = 0

    def shown(self, sync_fields: t.Collection[str]) -> dict[str, int]:
        """The counts every run shows, and those of the sync that are not all zero in this run."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k in ALWAYS_SHOWN or k in sync_fields}


ALWAYS_SHOWN = ("records", "calls", "succeeded", "failed", "retried")


def _short(ids: dict) -> dict:
    return {str(k)[:MAX_TEXT]: str(v)[:MAX_TEXT] for k, v in list(ids.items())[:5]}


class RunCounts:
    """The run's numbers, per stream, and its last few errors; bounded whatever the volume."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamCounts] = collections.defaultdict(StreamCounts)
        self.errors: collections.deque[dict] = collections.deque(maxlen=LAST_ERRORS)
        self.failures = 0
        self.skipped = 0  # test send: records not sent
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def record_seen(self, stream: str) -> None:
        """One more record read (from the reading thread only: its count needs no lock once the stream has one)."""
        counts = self.streams.get(stream)
        if counts is None:
            with self._lock:
                counts = self.streams[stream]
        counts.records += 1

    def call_made(self, stream: str, *, retried: bool) -> None:
        with self._lock:
            counts = self.streams[stream]
            counts.calls += 1
            counts.retried += retried

    def succeeded(self, stream: str, records: int) -> None:
        with self._lock:
            self.streams[stream].succeeded += records

    def add(self, stream: str, what: str, records: int = 1) -> None:
        """``records`` more of ``what`` (a :class:`StreamCounts` field: created, unchanged, removed...)."""
        with self._lock:
            counts = self.streams[stream]
            setattr(counts, what, getattr(counts, what) + records)

    def failed(self, stream: str, ids: dict, reason: str) -> None:
        with self._lock:
            self.streams[stream].failed += 1
            self.failures += 1
            self.errors.append({"stream": stream, "identifiers": _short(ids), "reason": reason[:MAX_TEXT]})

    def record_skipped(self) -> None:
        with self._lock:
            self.skipped += 1

    def __bool__(self) -> bool:
        return bool(self.streams)

    def handled(self) -> tuple[int, int]:
        """(records done, of which failed) so far."""
        with self._lock:
            return (sum(c.succeeded + c.failed + c.unchanged + c.skipped for c in self.streams.values()), self.failures)

    def _sync_fields(self) -> set[str]:
        """The sync's counts that are not zero for some stream (the others are not shown)."""
        return {
            k for c in self.streams.values() for k, v in dataclasses.asdict(c).items() if v and k not in ALWAYS_SHOWN
        }

    def summary(self) -> dict:
        """Counts for at most MAX_STREAMS_IN_STATE streams (the others together), the last few errors."""
        with self._lock:
            names = sorted(self.streams)
            fields = self._sync_fields()
            shown = {s: self.streams[s].shown(fields) for s in names[:MAX_STREAMS_IN_STATE]}
            summary: dict[str, t.Any] = {"streams": shown, "last_errors": list(self.errors)}
            if len(names) > MAX_STREAMS_IN_STATE:
                others = StreamCounts()
                for s in names[MAX_STREAMS_IN_STATE:]:
                    for field, value in dataclasses.asdict(self.streams[s]).items():
                        setattr(others, field, getattr(others, field) + value)
                summary["other_streams"] = {"streams": len(names) - MAX_STREAMS_IN_STATE, **others.shown(fields)}
            return summary

    def table(self) -> str:
        """The end-of-run summary, one line per stream (and their total)."""
        with self._lock:
            fields = self._sync_fields()
            counts = [(s, tuple(c.shown(fields).values())) for s, c in sorted(self.streams.items())]
        names = [
            f.name.replace("retried_from_earlier_runs", "from_earlier_runs")
            for f in dataclasses.fields(StreamCounts)
            if f.name in ALWAYS_SHOWN or f.name in fields
        ]
        rows: list[tuple[str, ...]] = [("stream", *names)]
        rows += [(s, *(f"{n:,}" for n in values)) for s, values in counts]
        if len(counts) > 1:
            columns = zip(*(values for _, values in counts), strict=True)
            rows.append(("total", *(f"{sum(col):,}" for col in columns)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        )
