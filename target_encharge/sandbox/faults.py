"""Fault injection: added latency, a share of 500s, 429s above a request rate, dropped connections.

Each API request asks `decide()` once, before it has any effect on the account, so a faulty answer
never leaves half-done state behind. With a seed, the random choices repeat from run to run.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

#: What `decide()` returns; None means "answer normally".
RATE_LIMITED, DROP, SERVER_ERROR = "429", "drop", "500"


@dataclass(frozen=True)
class Faults:
    """The fault settings; rate_limit None means no limit."""

    latency_ms: float = 0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    rate_limit: float | None = None
    retry_after: float = 1

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be 0 or more")
        for name in ("error_rate", "drop_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            object.__setattr__(self, "rate_limit", None)
        if self.retry_after < 0:
            raise ValueError("retry_after must be 0 or more")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Decides, request by request, whether the answer is normal, late, a 429, a 500 or nothing at all."""

    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self._seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault choices, repeatable from a seed; no secret
        self._window: deque[float] = deque()

    def set(self, **changes: float) -> Faults:
        """Change the given settings only; `rate_limit=0` (or None over HTTP) removes the limit."""
        with self._lock:
            self.faults = replace(self.faults, **changes)
            return self.faults

    def reset(self) -> None:
        """Forget the rate window and restart the random sequence from the seed."""
        with self._lock:
            self._window.clear()
            self._rng = random.Random(self._seed)  # noqa: S311 - as above

    def decide(self) -> str | None:
        faults = self.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.rate_limit is None and not faults.drop_rate and not faults.error_rate:
            return None
        with self._lock:
            if faults.rate_limit is not None:
                now = time.monotonic()
                window = self._window
                while window and window[0] <= now - 1.0:
                    window.popleft()
                if len(window) >= faults.rate_limit:
                    return RATE_LIMITED
                window.append(now)
            if faults.drop_rate and self._rng.random() < faults.drop_rate:
                return DROP
            if faults.error_rate and self._rng.random() < faults.error_rate:
                return SERVER_ERROR
        return None

    @property
    def retry_after_header(self) -> str:
        return f"{self.faults.retry_after:g}"
