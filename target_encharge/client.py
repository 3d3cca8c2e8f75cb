"""Delivery: one keep-alive session, auth, retries, Retry-After, the rate limit, concurrency and redaction.

The client knows nothing about Encharge's templates: it sends :class:`Call` objects and reports an
:class:`Outcome` for each. Calls that share an ordering key (the same person, the same object) are sent one
after the other in the order they were submitted; the others go out up to ``max_concurrency`` at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import ipaddress
import logging
import random
import threading
import time
import typing as t
import urllib.parse

import requests
import requests.adapters
import urllib3

from target_encharge import encoding
from target_encharge.errors import AuthError, ConfigError

TOKEN_HEADER = "X-Encharge-Token"
USER_AGENT = "target-encharge"
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_BODY_CHARS = 2000  # of an answer kept for responses and dead letters

logger = logging.getLogger("target_encharge.client")


@dataclasses.dataclass
class Entry:
    """One record on its way: its place in the input, what is sent, and what identifies it."""

    seq: int
    stream: str
    record: dict
    ids: dict


@dataclasses.dataclass(eq=False)
class Call:
    """One HTTP request carrying one or more records."""

    stream: str
    endpoint: str
    method: str
    url: str
    content_type: str
    headers: dict[str, str]
    body: bytes | None
    entries: list[Entry]
    keys: tuple[str, ...] = ()
    rebuild: t.Callable[[list[Entry]], Call] | None = None  # the same call for fewer records (batch split)
    waiting_on: int = 0
    waiters: list[Call] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Outcome:
    """What came of a call after its last attempt."""

    status: int | None
    body: t.Any
    error: str | None
    attempts: int
    seconds: float
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # of the last answer (test send shows them)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: exponential backoff with jitter, or what Retry-After says."""

    max_retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    @staticmethod
    def retryable(status: int | None) -> bool:
        """429 and 5xx are worth another try; None stands for a timeout or a dropped connection."""
        return status is None or status == 429 or status >= 500

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        told = parse_retry_after(retry_after)
        if told is not None:
            return min(told, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


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


class RateLimiter:
    """At most ``per_second`` calls per second, across all threads (evenly spaced slots)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, setting: str) -> None:
    """https, or plain http to this machine only."""
    scheme, host, _ = _origin(url)
    if scheme == "https" and host:
        return
    if scheme == "http" and is_loopback(host):
        return
    msg = f"{setting}: {url!r} must be an https URL (plain http is only allowed to loopback)"
    raise ConfigError(msg)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) that the HTTP client will really connect to.

    Parsed with urllib3's parser, the one requests connects with: ``urllib.parse`` reads some URLs otherwise
    (``http://other:1\\@api.host/``: a backslash ends urllib3's host, not urllib.parse's), and a key must
    follow the connection, not a reading of it."""
    try:
        parts = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return "", "", None
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower().strip("[]"), parts.port or _DEFAULT_PORTS.get(scheme)


class Credentials:
    """Which key a URL gets: the API key for the REST host, the write key for Ingest, none elsewhere."""

    def __init__(self, api_url: str, ingest_url: str, api_key: str | None, write_key: str | None) -> None:
        self.api_url, self.ingest_url = api_url.rstrip("/"), ingest_url.rstrip("/")
        self.api_key, self.write_key = api_key, write_key

    def for_url(self, url: str) -> tuple[str, str | None] | None:
        """(setting name, key) for a URL on Encharge's configured hosts, else None."""
        origin = _origin(url)
        ingest = _origin(self.ingest_url)
        if origin == ingest and (url.rstrip("/") == self.ingest_url or url.startswith(self.ingest_url + "/")):
            return "write_key", self.write_key
        if origin == _origin(self.api_url):
            return "api_key", self.api_key
        if origin == ingest:
            return "write_key", self.write_key
        return None

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.write_key) if s]


class Redactor:
    """Masks the keys wherever text may carry them: one place for all outputs."""

    def __init__(self, secrets: t.Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


class RedactingFilter(logging.Filter):
    """A log filter that masks the keys in every message, whoever logs it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _Session(requests.Session):
    """A session that drops the Encharge token when a redirect leaves the host it was meant for."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if _origin(response.request.url or "") != _origin(prepared_request.url or ""):
            prepared_request.headers.pop(TOKEN_HEADER, None)


def parse_body(response: requests.Response) -> t.Any:  # noqa: ANN401
    """An answer's body: parsed JSON, else text, else None (201 and 204 have none); truncated when large."""
    raw = response.content
    if not raw:
        return None
    try:
        body = encoding.loads(raw)
    except Exception:  # noqa: BLE001
        text = raw.decode("utf-8", "replace")
        return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + "...(truncated)"
    if len(raw) > MAX_BODY_CHARS:
        return {"truncated": True, "preview": raw[:MAX_BODY_CHARS].decode("utf-8", "replace")}
    return body


class Client:
    """Sends one call with its retries; knows auth, timeouts, the rate limit and the retry policy."""

    def __init__(
        self,
        credentials: Credentials,
        retry: RetryPolicy,
        timeout: float,
        rate: RateLimiter,
        pool_size: int,
    ) -> None:
        self.credentials, self.retry, self.timeout, self.rate = credentials, retry, timeout, rate
        self.redact = Redactor(credentials.secrets())
        self.session = _Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT

    def headers(self, call: Call, *, mask: bool = False) -> dict[str, str]:
        """The headers a call goes out with (the key masked when ``mask``)."""
        headers = {"Content-Type": call.content_type, **call.headers} if call.body is not None else dict(call.headers)
        headers["Accept"] = "application/json"
        credential = self.credentials.for_url(call.url)
        if credential and credential[1]:
            headers[TOKEN_HEADER] = "***" if mask else credential[1]
        return headers

    def send(self, call: Call) -> Outcome:
        """Send ``call``, retrying 429/5xx/timeouts/dropped connections; raise AuthError on 401/403."""
        started = time.monotonic()
        headers = self.headers(call)
        credential = self.credentials.for_url(call.url)
        attempt = 0
        while True:
            attempt += 1
            self.rate.wait()
            status, body, error, retry_after, answer_headers = None, None, None, None, {}
            try:
                response = self.session.request(
                    call.method, call.url, data=call.body, headers=headers, timeout=self.timeout
                )
                status, body = response.status_code, parse_body(response)
                retry_after = response.headers.get("Retry-After")
                answer_headers = dict(response.headers)
                if not 200 <= status < 300:
                    error = f"HTTP {status}: {_error_message(body)}"
            except requests.Timeout:
                error = f"timed out after {self.timeout:g}s"
            except requests.ConnectionError as exc:
                error = f"connection failed: {type(exc).__name__}"
            except requests.RequestException as exc:
                error = f"request failed: {type(exc).__name__}"
                return Outcome(None, None, self.redact(error), attempt, time.monotonic() - started)
            if status in (401, 403) and credential:  # from another host, a refusal is the record's, not our key's
                key = credential[0]
                msg = (f"Encharge refused the {key} (HTTP {status} from {call.method} {_path(call.url)}): "
                       f"check that `{key}` is the right key for this account")
                raise AuthError(msg)
            if error is None or not self.retry.retryable(status) or attempt > self.retry.max_retries:
                return Outcome(status, body, self.redact(error) if error else None, attempt,
                               time.monotonic() - started, answer_headers)
            wait = self.retry.delay(attempt, retry_after)
            logger.info("Retrying %s %s in %.2fs (attempt %d): %s", call.method, _path(call.url), wait,
                        attempt + 1, self.redact(error))
            time.sleep(wait)

    def close(self) -> None:
        self.session.close()


def _path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path or "/"


def _error_message(body: t.Any) -> str:  # noqa: ANN401
    """Encharge's error envelope `{"error": {"message": ...}}`, or the body itself."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])
    if body is None:
        return "no body"
    return str(body)[:300]


class Delivery:
    """Runs calls on worker threads: same-key calls in submission order, others concurrently.

    ``on_result(call, outcome)`` is called once for each call that was sent. A batch that Encharge refused is
    reported as ``on_result(call, outcome, False)`` (its records are not settled by it), then split, and each
    piece is reported in turn while looking for the records at fault.
    """

    def __init__(
        self,
        client: Client,
        on_result: t.Callable[..., None],
        concurrency: int,
        *,
        dry_run: bool = False,
    ) -> None:
        self.client, self.on_result, self.dry_run = client, on_result, dry_run
        self.concurrency = max(1, concurrency)
        self.max_queued = self.concurrency * 4
        self.fatal: BaseException | None = None
        self._cond = threading.Condition()
        self._ready: collections.deque[Call] = collections.deque()
        self._tails: dict[str, Call] = {}
        self._unfinished = 0
        self._closing = False
        self._threads: list[threading.Thread] = []

    def _start(self) -> None:
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"encharge-delivery-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def submit(self, call: Call) -> None:
        """Queue a call; blocks while too many are queued (bounded memory)."""
        self.raise_if_fatal()
        if self.dry_run:
            self.on_result(call, Outcome(None, None, None, 0, 0.0))
            return
        if not self._threads:
            self._start()
        with self._cond:
            while self._unfinished >= self.max_queued and self.fatal is None:
                self._cond.wait()
            self.raise_if_fatal()
            earlier = {self._tails[k] for k in call.keys if k in self._tails}
            for other in earlier:
                other.waiters.append(call)
            call.waiting_on = len(earlier)
            for key in call.keys:
                self._tails[key] = call
            self._unfinished += 1
            if not earlier:
                self._ready.append(call)
                self._cond.notify_all()

    def wait(self) -> None:
        """Until every submitted call is finished (or the run has stopped)."""
        with self._cond:
            while self._unfinished and self.fatal is None:
                self._cond.wait(0.5)
        self.raise_if_fatal()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.client.timeout + 1)
        self.client.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closing:
                    self._cond.wait()
                if self._closing and not self._ready:
                    return
                call = self._ready.popleft()
            try:
                if self.fatal is None:
                    self._deliver(call)
            except BaseException as exc:  # noqa: BLE001 - any failure here must stop the run, not a thread
                self.fatal = exc
            finally:
                self._finish(call)

    def _deliver(self, call: Call) -> None:
        outcome = self.client.send(call)
        status = outcome.status
        refused = status is not None and 400 <= status < 500 and status != 429
        if refused and len(call.entries) > 1 and call.rebuild is not None:
            middle = len(call.entries) // 2
            logger.info("Encharge refused a batch of %d (%s); splitting it to find the records at fault",
                        len(call.entries), outcome.error)
            self.on_result(call, outcome, False)
            for part in (call.entries[:middle], call.entries[middle:]):
                self._deliver(call.rebuild(part))
            return
        self.on_result(call, outcome)

    def _finish(self, call: Call) -> None:
        with self._cond:
            for key in call.keys:
                if self._tails.get(key) is call:
                    del self._tails[key]
            for waiter in call.waiters:
                waiter.waiting_on -= 1
                if waiter.waiting_on == 0:
                    self._ready.append(waiter)
            call.waiters = []
            self._unfinished -= 1
            self._cond.notify_all()
