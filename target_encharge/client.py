"""One call to Encharge: credentials, timeouts, the bounded read of an answer, the retry loop and the rate limit.

The client knows nothing about Encharge's templates: it sends a :class:`~target_encharge.request.Request` with
its retries and reports an :class:`~target_encharge.request.Outcome`. What an outcome means is
:func:`~target_encharge.request.verdict`'s to say.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import typing as t

import urllib3
from singer_sdk import metrics

from target_encharge import encoding
from target_encharge.errors import AuthError, EnchargeUnavailable
from target_encharge.redaction import MASK, Redactor
from target_encharge.request import Outcome, Request, Verdict, verdict
from target_encharge.retry import RetryPolicy
from target_encharge.transport import RefusedRedirectError, TooManyRedirectsError, Transport
from target_encharge.urls import TOKEN_HEADER, Credentials, url_path

if t.TYPE_CHECKING:
    from target_encharge.settings import RunSettings

USER_AGENT = "target-encharge"
MAX_BODY_CHARS = 2000  # of an answer kept for responses and dead letters
MAX_READ_BYTES = 4 * MAX_BODY_CHARS + 1024  # of an answer kept (decoded): what is shown, plus a little
MAX_CHECK_BYTES = 16 * 1024 * 1024  # of a start-up check's or a lookup's answer: read whole, the run learns from it
DRAIN_BYTES = 64 * 1024  # of an answer read past what is kept, and dropped: its connection is then kept
MIN_POOL = 4  # keep-alive connections per host, at the least

logger = logging.getLogger("target_encharge.client")
metrics_logger = metrics.get_metrics_logger()  # the SDK's own, at the plugin's log level

# No answer, and why: the connection dropped (also mid-body, or the body could not be decoded), or it timed out;
# else the request could not be made at all (a header or URL the HTTP client refuses, too many redirects). A new
# connection that fails is dropped, not timed out, though urllib3 counts it among its timeouts.
DROPPED = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ProxyError,
    urllib3.exceptions.SSLError,
    urllib3.exceptions.DecodeError,
    http.client.HTTPException,
    ConnectionError,
)
TIMED_OUT = (urllib3.exceptions.TimeoutError, TimeoutError)
UNSENDABLE = (urllib3.exceptions.HTTPError, TooManyRedirectsError, ValueError)


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


def read_answer(response: urllib3.BaseHTTPResponse, deadline: float, keep: int = MAX_READ_BYTES) -> bytes:
    """An answer's body, decoded, kept up to ``keep`` bytes and read before ``deadline`` (a server dripping bytes
    cannot hold a call past its timeout; a small compressed answer is never inflated beyond the bound).

    An answer at most DRAIN_BYTES longer than what is kept is read to its end (the rest dropped), so that its
    keep-alive connection goes back to the pool; a longer one is cut, and its connection closed."""
    chunks, size = [], 0
    while size < keep + DRAIN_BYTES:
        if time.monotonic() > deadline:
            raise TimeoutError
        room = keep - size if size < keep else keep + DRAIN_BYTES - size
        chunk = response.read1(room, decode_content=True)  # what has arrived, up to room: one read of the socket
        if not chunk:
            break
        if size < keep:
            chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, *, whole: bool = False) -> t.Any:  # noqa: ANN401
    """An answer's body: parsed JSON, else text, else None (201 and 204 have none); truncated when large (unless
    ``whole``: a check's or a lookup's JSON, which the run reads)."""
    if not raw:
        return None
    try:
        body = encoding.loads(raw)
    except Exception:  # noqa: BLE001 - anything that is not JSON (or JSON cut off at the read bound) is kept as text
        if len(raw) > MAX_BODY_CHARS:
            return {"truncated": True, "preview": raw[:MAX_BODY_CHARS].decode("utf-8", "replace")}
        return raw.decode("utf-8", "replace")
    if len(raw) > MAX_BODY_CHARS and not whole:
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
        self.transport = Transport(max(pool_size, MIN_POOL), USER_AGENT)

    @classmethod
    def for_settings(cls, settings: RunSettings, *, pool_size: int) -> Client:
        """The client a run (or ``target-encharge-check``) builds from its settings: keys, retries, timeout, rate."""
        return cls(
            Credentials(settings.api_url, settings.ingest_url, settings.api_key, settings.write_key),
            RetryPolicy(max_retries=settings.max_retries, backoff=settings.retry_backoff),
            timeout=settings.request_timeout,
            rate=RateLimiter(settings.max_requests_per_second),
            pool_size=pool_size,
        )

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

    def _attempt(
        self, request: Request, headers: dict[str, str], attempt: int, started: float, *, credentialed: bool
    ) -> tuple[Outcome, str | None]:
        """One try, bounded by the timeout as a whole: its outcome (so far) and the Retry-After it was told."""
        deadline = time.monotonic() + self.timeout
        checking = request.endpoint == "lookup"  # a start-up check or a lookup: its answer is read whole
        try:
            response, redirected, sent = self.transport.open(
                request.method, request.url, request.body, headers, self.timeout
            )
            if redirected:  # a refusal blames our key only if the key went along
                credentialed = TOKEN_HEADER in sent
            try:
                raw = read_answer(response, deadline, MAX_CHECK_BYTES if checking else MAX_READ_BYTES)
            finally:
                if not response.closed:  # cut short: the rest is never read, so its connection is dropped
                    response.close()
                response.release_conn()
        except RefusedRedirectError as exc:
            error, failure = str(exc), "request"
        except DROPPED as exc:
            error, failure = f"connection failed: {type(exc).__name__}", "connection"
        except TIMED_OUT:
            error, failure = f"timed out after {self.timeout:g}s", "timeout"
        except UNSENDABLE as exc:
            error, failure = f"request failed: {type(exc).__name__}", "request"
        else:
            status, body = response.status, parse_body(raw, whole=checking)
            refusal = None if 200 <= status < 300 else self.redact(f"HTTP {status}: {_error_message(body)}")
            return (
                Outcome(
                    status, body, refusal, attempt, time.monotonic() - started, dict(response.headers), credentialed
                ),
                response.headers.get("Retry-After"),
            )
        return Outcome(
            None,
            None,
            self.redact(error),
            attempt,
            time.monotonic() - started,
            credentialed=credentialed,
            failure=failure,
        ), None

    def send(self, request: Request) -> Outcome:
        """Send ``request``, retrying what the policy says is worth it; raise AuthError when a key is refused,
        EnchargeUnavailable when Encharge asks to wait longer than any call should."""
        started = time.monotonic()
        headers = self.headers(request)
        credential = self.credentials.for_url(request.url)
        attempt = 0
        while True:
            attempt += 1
            self.rate.wait()
            tried = time.monotonic()
            outcome, retry_after = self._attempt(
                request, headers, attempt, started, credentialed=credential is not None
            )
            _log_duration(request, outcome, time.monotonic() - tried)
            if verdict(outcome) is Verdict.AUTH_FAILURE and credential is not None:
                msg = (
                    f"Encharge refused the {credential.setting} (HTTP {outcome.status} from {request.method} "
                    f"{url_path(request.url)}): check that `{credential.setting}` is the right key for this account"
                )
                raise AuthError(msg)
            if not self.retry.is_retry(outcome):
                return outcome
            if self.retry.is_beyond_reason(retry_after):
                msg = (
                    f"Encharge is unavailable: it asked to wait {retry_after} s (Retry-After, HTTP "
                    f"{outcome.status} from {request.method} {url_path(request.url)}), more than "
                    f"{self.retry.retry_after_max:g} s; run again later: the tap resumes from the last STATE "
                    "written, so what was not delivered is sent then"
                )
                raise EnchargeUnavailable(msg)
            if self.retry.is_exhausted(attempt):
                return outcome
            wait = self.retry.get_backoff_time(attempt, retry_after)
            logger.info(
                "Retrying %s %s in %.2fs (attempt %d): %s",
                request.method,
                url_path(request.url),
                wait,
                attempt + 1,
                outcome.error,
            )
            time.sleep(wait)

    def close(self) -> None:
        self.transport.close()


def _log_duration(request: Request, outcome: Outcome, seconds: float) -> None:
    """A Singer METRIC line for one attempt, as the SDK's REST streams write it (`http_request_duration`, tagged
    with the stream, the endpoint template, the HTTP status and whether it succeeded); never the URL, which may
    carry a person's email or a token."""
    if not metrics_logger.isEnabledFor(logging.INFO):
        return
    tags: dict[str, t.Any] = {
        metrics.Tag.STREAM: request.stream,
        metrics.Tag.ENDPOINT: request.endpoint,
        metrics.Tag.HTTP_STATUS_CODE: outcome.status,
        metrics.Tag.STATUS: metrics.Status.SUCCEEDED if outcome.ok else metrics.Status.FAILED,
    }
    metrics.log(metrics_logger, metrics.Point("timer", metrics.Metric.HTTP_REQUEST_DURATION, seconds, tags))
