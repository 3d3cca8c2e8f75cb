"""One call to Encharge: the keep-alive session, credentials, timeouts, the retry loop and the rate limit.

The client knows nothing about Encharge's templates: it sends a :class:`~target_encharge.request.Request` with
its retries and reports an :class:`~target_encharge.request.Outcome`. What an outcome means is
:func:`~target_encharge.request.verdict`'s to say.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import requests
import requests.adapters
from typing_extensions import override

from target_encharge import encoding
from target_encharge.errors import AuthError
from target_encharge.redaction import MASK, Redactor
from target_encharge.request import Outcome, Request, Verdict, verdict
from target_encharge.urls import TOKEN_HEADER, Credentials, origin, url_path

if t.TYPE_CHECKING:
    from target_encharge.retry import RetryPolicy

USER_AGENT = "target-encharge"
MAX_BODY_CHARS = 2000  # of an answer kept for responses and dead letters
MIN_POOL = 4  # keep-alive connections per host, at the least

logger = logging.getLogger("target_encharge.client")


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


class _Session(requests.Session):
    """A session that drops the Encharge token when a redirect leaves the host it was meant for."""

    @override
    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if origin(response.request.url or "") != origin(prepared_request.url or ""):
            prepared_request.headers.pop(TOKEN_HEADER, None)


def parse_body(response: requests.Response) -> t.Any:  # noqa: ANN401
    """An answer's body: parsed JSON, else text, else None (201 and 204 have none); truncated when large."""
    raw = response.content
    if not raw:
        return None
    try:
        body = encoding.loads(raw)
    except Exception:  # noqa: BLE001 - anything that is not JSON is kept as text
        text = raw.decode("utf-8", "replace")
        return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + "...(truncated)"
    if len(raw) > MAX_BODY_CHARS:
        return {"truncated": True, "preview": raw[:MAX_BODY_CHARS].decode("utf-8", "replace")}
    return body


def _error_message(body: t.Any) -> str:  # noqa: ANN401
    """Encharge's error envelope `{"error": {"message": ...}}`, or the body itself."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])
    if body is None:
        return "no body"
    return str(body)[:300]


class Client:
    """Sends one request with its retries; knows the keys, timeouts, the rate limit and the retry policy."""

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
        adapter = requests.adapters.HTTPAdapter(pool_connections=MIN_POOL, pool_maxsize=max(pool_size, MIN_POOL))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT

    def headers(self, request: Request, *, mask: bool = False) -> dict[str, str]:
        """The headers a request goes out with (the key masked when ``mask``)."""
        headers = dict(request.headers)
        if request.body is not None:
            headers = {"Content-Type": request.content_type, **headers}
        headers["Accept"] = "application/json"
        credential = self.credentials.for_url(request.url)
        if credential and credential.key:
            headers[TOKEN_HEADER] = MASK if mask else credential.key
        return headers

    def _attempt(self, request: Request, headers: dict[str, str], attempt: int, started: float,
                 credentialed: bool) -> tuple[Outcome, str | None]:  # noqa: FBT001
        """One try: its outcome (so far) and the Retry-After it was told."""
        try:
            response = self.session.request(request.method, request.url, data=request.body, headers=headers,
                                            timeout=self.timeout)
        except requests.Timeout:
            error, failure = f"timed out after {self.timeout:g}s", "timeout"
        except requests.ConnectionError as exc:
            error, failure = f"connection failed: {type(exc).__name__}", "connection"
        except requests.RequestException as exc:
            error, failure = f"request failed: {type(exc).__name__}", "request"
        else:
            status, body = response.status_code, parse_body(response)
            refusal = None if 200 <= status < 300 else self.redact(f"HTTP {status}: {_error_message(body)}")
            return (Outcome(status, body, refusal, attempt, time.monotonic() - started, dict(response.headers),
                            credentialed), response.headers.get("Retry-After"))
        return Outcome(None, None, self.redact(error), attempt, time.monotonic() - started,
                       credentialed=credentialed, failure=failure), None

    def send(self, request: Request) -> Outcome:
        """Send ``request``, retrying what the policy says is worth it; raise AuthError when a key is refused."""
        started = time.monotonic()
        headers = self.headers(request)
        credential = self.credentials.for_url(request.url)
        attempt = 0
        while True:
            attempt += 1
            self.rate.wait()
            outcome, retry_after = self._attempt(request, headers, attempt, started, credential is not None)
            if verdict(outcome) is Verdict.AUTH_FAILURE and credential is not None:
                msg = (f"Encharge refused the {credential.setting} (HTTP {outcome.status} from {request.method} "
                       f"{url_path(request.url)}): check that `{credential.setting}` is the right key for this account")
                raise AuthError(msg)
            if not self.retry.is_retry(outcome) or self.retry.is_exhausted(attempt):
                return outcome
            wait = self.retry.get_backoff_time(attempt, retry_after)
            logger.info("Retrying %s %s in %.2fs (attempt %d): %s", request.method, url_path(request.url), wait,
                        attempt + 1, outcome.error)
            time.sleep(wait)

    def close(self) -> None:
        self.session.close()
