"""The retry policy: one value that answers questions about an outcome, the way urllib3's ``Retry`` does."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
import typing as t

from target_encharge.request import Outcome, Verdict, verdict
from target_encharge.settings import MAX_BACKOFF, default


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often to try again and how long to wait: exponential backoff with jitter, or what Retry-After says."""

    DEFAULT_MAX_RETRIES: t.ClassVar[int] = int(default("max_retries"))
    DEFAULT_BACKOFF: t.ClassVar[float] = float(default("retry_backoff"))
    DEFAULT_BACKOFF_MAX: t.ClassVar[float] = MAX_BACKOFF  # seconds: the longest wait of our own choosing
    DEFAULT_RETRY_AFTER_MAX: t.ClassVar[float] = 120.0  # seconds: a longer Retry-After means Encharge is unavailable
    DEFAULT_OUTAGE_CALLS: t.ClassVar[int] = 5  # calls in a row failing after their retries: Encharge is unavailable

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: float = DEFAULT_BACKOFF
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    outage_calls: int = DEFAULT_OUTAGE_CALLS

    @staticmethod
    def is_retry(outcome: Outcome) -> bool:
        """Whether this outcome is worth another try (429, 5xx, a timeout, a dropped connection)."""
        return verdict(outcome) is Verdict.RETRY

    def is_exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` tries (1-based) used up the retries."""
        return attempt > self.max_retries

    def is_beyond_reason(self, retry_after: str | None) -> bool:
        """Whether Encharge asked to wait longer than any call should (then the run stops: it is unavailable)."""
        told = parse_retry_after(retry_after)
        return told is not None and told > self.retry_after_max

    def is_outage(self, failed_in_a_row: int) -> bool:
        """Whether this many calls in a row, each failing after its retries, mean that Encharge is unavailable."""
        return failed_in_a_row >= self.outage_calls

    def get_backoff_time(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): Retry-After when told, else backoff."""
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(told, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
