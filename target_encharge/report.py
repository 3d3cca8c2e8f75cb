"""The run's report: one JSON document saying what the run did (the run-history row, and failures by reason with
a few examples by identifiers), written to `report_path` and POSTed to `notify_url`, signed.

Nothing here knows Encharge or the ledger: the run hands over its counts and how it ended. Secrets never reach a
report: the settings appear only as a fingerprint of their non-secret values, identifiers are the records'
(email, userId, externalId, key properties), and reasons went through the run's redaction before they came here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import logging
import os
import socket
import threading
import typing as t
import uuid

from target_encharge import encoding

if t.TYPE_CHECKING:
    from target_encharge.counts import RunCounts

logger = logging.getLogger("target_encharge")

SIGNATURE_HEADER = "X-Target-Encharge-Signature"
MAX_EXAMPLES = 10  # identifiers kept per failure reason
MAX_REASONS = 100  # distinct failure reasons in a report; beyond, counted together
MAX_TEXT = 300  # characters of a reason or an identifier value kept

RUNNING, SUCCEEDED, FAILED, STOPPED = "running", "succeeded", "failed", "stopped"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")  # as the ledger stamps


@dataclasses.dataclass
class RunRecord:
    """One run as the history keeps it: when, how it ended and why, and what it did per stream."""

    run_id: str
    started_at: str
    host: str
    pid: int
    settings_fingerprint: str
    ended_at: str | None = None
    status: str = RUNNING  # running, succeeded, failed (exit 1), stopped (a signal)
    exit_code: int | None = None
    reason: str | None = None
    records_read: int = 0
    calls: int = 0
    retries: int = 0
    streams: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @classmethod
    def begin(cls, settings_fingerprint: str) -> RunRecord:
        return cls(
            run_id=uuid.uuid4().hex,
            started_at=now(),
            host=socket.gethostname(),
            pid=os.getpid(),
            settings_fingerprint=settings_fingerprint,
        )

    def end(self, counts: RunCounts, *, exit_code: int, reason: str | None, signalled: bool = False) -> None:
        """The run ended with ``exit_code`` (``reason``: the one line it was told with)."""
        self.ended_at = now()
        self.exit_code = exit_code
        self.status = STOPPED if signalled else SUCCEEDED if exit_code == 0 else FAILED
        self.reason = reason[:MAX_TEXT] if reason else None
        self.streams = {name: dataclasses.asdict(c) for name, c in sorted(counts.streams.items())}
        self.records_read = sum(c["records"] for c in self.streams.values())
        self.calls = sum(c["calls"] for c in self.streams.values())
        self.retries = sum(c["retried"] for c in self.streams.values())

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def settings_fingerprint(config: t.Mapping[str, t.Any], secret: t.Callable[[str], bool]) -> str:
    """A short digest of the settings a run was given, leaving out every value ``secret`` names (the keys, the
    notification secret) and any ledger password: two runs with the same digest ran with the same settings."""
    from target_encharge.ledger import canonical_json, mask_url  # the ledger's canonical JSON: one definition

    kept = {k: v for k, v in config.items() if not secret(k)}
    if isinstance(kept.get("ledger_url"), str):
        kept["ledger_url"] = mask_url(kept["ledger_url"])
    return hashlib.blake2b(canonical_json(kept).encode(), digest_size=8).hexdigest()


class FailureExamples:
    """Failures by (stream, reason): how many, and the identifiers of the first few. Bounded whatever the volume."""

    def __init__(self) -> None:
        self._by_reason: dict[tuple[str, str], dict[str, t.Any]] = {}
        self._other = 0
        self._lock = threading.Lock()

    def add(self, stream: str, ids: t.Mapping[str, t.Any], reason: str) -> None:
        key = (stream, reason[:MAX_TEXT])
        with self._lock:
            found = self._by_reason.get(key)
            if found is None:
                if len(self._by_reason) >= MAX_REASONS:
                    self._other += 1
                    return
                found = self._by_reason[key] = {"stream": stream, "reason": key[1], "count": 0, "examples": []}
            found["count"] += 1
            if len(found["examples"]) < MAX_EXAMPLES:
                found["examples"].append({str(k)[:MAX_TEXT]: str(v)[:MAX_TEXT] for k, v in ids.items()})

    def listed(self) -> list[dict[str, t.Any]]:
        """Most frequent first; the failures of reasons past :data:`MAX_REASONS` as one last entry."""
        with self._lock:
            listed = sorted(self._by_reason.values(), key=lambda f: (-f["count"], f["stream"], f["reason"]))
            listed = [{**f, "examples": list(f["examples"])} for f in listed]
            if self._other:
                listed.append({"stream": None, "reason": "other reasons", "count": self._other, "examples": []})
        return listed


def report(record: RunRecord, failures: FailureExamples) -> dict[str, t.Any]:
    """The run's report: its history row and its failures by reason."""
    return {**record.as_dict(), "failures": failures.listed()}


def signature(body: bytes, secret: str) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` and the hex HMAC-SHA256 of the body keyed with the
    secret (a receiver computes the same over the bytes it got and compares in constant time)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def write(path: str, document: dict[str, t.Any]) -> None:
    """The report at ``path``, replaced whole (a reader never sees half of one); a failure is logged only."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(encoding.dumps(document) + b"\n")
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("Could not write the run report to report_path (%s): %s", path, exc.strerror or exc)
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def notify(url: str, secret: str | None, document: dict[str, t.Any], timeout: float) -> bool:
    """POST the report to ``url``, signed when there is a secret. A failure or a timeout is logged, never raised:
    a notification never fails the run. True when the receiver answered 2xx."""
    import requests  # only a run that notifies pays for its import

    body = encoding.dumps(document)
    headers = {"Content-Type": "application/json", "User-Agent": "target-encharge"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    shown = url.split("?", 1)[0]  # a query may carry a token
    try:
        answer = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        logger.warning("Could not send the run report to notify_url (%s): %s", shown, type(exc).__name__)
        return False
    if not answer.ok:
        logger.warning("notify_url (%s) answered HTTP %d to the run report", shown, answer.status_code)
        return False
    logger.info("Run report sent to notify_url (%s)", shown)
    return True
