"""The sandbox's HTTP side: a keep-alive threaded server, fault injection, the request log, inspection endpoints.

`Sandbox` is the public face: start it, point a pipeline at `api_url` and `ingest_url`, look at what arrived.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qsl, unquote

from . import control, exact_json, report
from .api import INGEST_PATH, Api, Call, envelope
from .control import JSON_TYPE as _JSON
from .errors import ApiError
from .faults import DROP, RATE_LIMITED, FaultInjector, Faults
from .log import RequestLog
from .store import Store

DEFAULT_API_KEY = "sandbox-api-key"
DEFAULT_WRITE_KEY = "sandbox-write-key"
DEFAULT_SCHEMAS = ("company", "subscription")
DEFAULT_ACCOUNT_ID = 1
DEFAULT_ACCOUNT_NAME = "Encharge sandbox"
REDIRECT_PATH = control.PREFIX + "redirect"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_URL_BYTES = 8 * 1024  # a longer request target is answered 414, as real servers do (nginx's default buffer)
_REDACTED_HEADERS = frozenset(("x-encharge-token", "authorization"))


def _check_loopback(host: str) -> None:
    """Refuse anything but a loopback address: the sandbox has fixed, published keys."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    if not all(ipaddress.ip_address(addr.split("%")[0]).is_loopback for addr in addresses):
        raise ValueError(f"the sandbox binds loopback addresses only (127.0.0.1, ::1, localhost), not {host!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: ANN401 - as socketserver has them
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:  # noqa: ANN401 - as socketserver has it
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the keep-alive connections still open, so their threads finish with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401 - as socketserver has them
        if self.sandbox.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        path, _, query_string = self.path.partition("?")
        received = time.time()
        raw = self._read_body()
        if raw is None:
            return
        sandbox = self.server.sandbox
        if len(self.path) > MAX_URL_BYTES:
            self._answer(414, envelope(f"URI longer than {MAX_URL_BYTES} bytes", "sandbox-http"))
        elif path == REDIRECT_PATH:  # any method: 307 to ?to=URL, to see which headers follow a redirect
            self._answer(307, None, extra=(("Location", dict(parse_qsl(query_string)).get("to", "/")),))
        elif path.startswith(control.PREFIX):
            status, payload, content_type = control.handle(sandbox, self.command, path, query_string, raw)
            self._answer(status, payload, content_type)
        else:
            self._api(sandbox, path, query_string, raw, received)

    # http.server dispatches on these names (do_<METHOD>): every method takes the same way in.
    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY_BYTES:
            self.close_connection = True
            self._answer(400 if size < 0 else 413, envelope("Bad Content-Length", "sandbox-http"))
            return None
        return self.rfile.read(size) if size else b""

    def _api(self, sandbox: Sandbox, path: str, query_string: str, raw: bytes, received: float) -> None:
        api = sandbox._api
        route = api.route(self.command, path)
        query = dict(parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        header_token, query_token = self.headers.get("X-Encharge-Token"), query.get("token")
        token = query_token if header_token is None and route.api == "rest" else header_token
        call = Call(self.command, dict(query), params=route.params)
        content_type = self.headers.get("Content-Type", "")
        logged_body = _parse_body(raw, content_type, call)
        if api.mentions_key(raw):
            logged_body = _parse_body(api.redact(raw), content_type, Call("", {}))

        fault = sandbox._faults.decide()
        extra: Iterable[tuple[str, str]] = ()
        if fault == DROP:
            status, payload = None, None
            self.close_connection = True
        elif fault is not None:
            if fault == RATE_LIMITED:
                status, message = 429, "Too many requests: slow down and retry after the Retry-After delay"
                extra = (("Retry-After", sandbox._faults.retry_after_header),)
            else:
                status, message = 500, "Internal server error (injected by the sandbox)"
            payload = envelope(message, sandbox._trace_id())
        else:
            try:
                if route.handler is None:
                    raise ApiError(404, f"Cannot {self.command} {path}")
                api.check_auth(route.api, token)
                status, payload = route.handler(call)
            except ApiError as exc:
                message = (
                    api.redact(exc.message.encode()).decode() if api.mentions_key(exc.message.encode()) else exc.message
                )
                status, payload = exc.status, envelope(message, sandbox._trace_id())

        # Logged before answering: once a client has its answer, the log already shows the request.
        self._log(
            sandbox,
            route.endpoint,
            path,
            query,
            logged_body,
            len(raw),
            status,
            fault,
            received,
            auth=api.key_name(header_token if header_token is not None else query_token),
        )
        if status is not None:
            self._answer(status, payload, _JSON, extra)

    def _log(
        self,
        sandbox: Sandbox,
        endpoint: str,
        path: str,
        query: dict[str, str],
        body: Any,  # noqa: ANN401
        size: int,
        status: int | None,
        fault: str | None,
        received: float,
        auth: str | None,
    ) -> None:
        """One request log entry, with the keys replaced by *** wherever they appear."""
        api = sandbox._api
        if "token" in query:
            query["token"] = "***"  # noqa: S105 - the token replaced, not one
        headers = {name.lower(): value for name, value in self.headers.items()}
        for name in _REDACTED_HEADERS.intersection(headers):
            headers[name] = "***"
        texts = itertools.chain((unquote(self.path),), query.values(), headers.values())
        if any(api.mentions_key(text.encode()) for text in texts):
            path = api.redact(unquote(path).encode()).decode()
            query = {k: api.redact(v.encode()).decode() for k, v in query.items()}
            headers = {k: api.redact(v.encode()).decode() for k, v in headers.items()}
        entry = {
            "method": self.command,
            "path": path,
            "query": query,
            "status": status,
            "body": body,
            "auth": auth,
            "headers": headers,
            "fault": fault,
            "time": received,
        }
        sandbox._log.add(entry, endpoint, size)
        if sandbox.verbose:
            took = (time.time() - received) * 1000
            sys.stderr.write(f"{self.command} {path} {status or 'dropped'} {took:.1f}ms\n")

    def _answer(
        self,
        status: int,
        payload: Any,  # noqa: ANN401 - any JSON value
        content_type: str = _JSON,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """The whole answer in one write (no Nagle stalls), with an exact Content-Length; 201/204 bodiless."""
        if payload is None:
            body = b""
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = exact_json.dumps(payload).encode()
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Server: encharge-sandbox"]
        if status != 204:
            lines.append(f"Content-Length: {len(body)}")
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.extend(f"{name}: {value}" for name, value in extra)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def log_message(self, format: str, *args: object) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)


def _parse_body(raw: bytes, content_type: str, call: Call) -> Any:  # noqa: ANN401 - any JSON value
    """Fill call.body (JSON with exact numbers, or a form when sent as one) or call.body_error; return what
    the log keeps."""
    if not raw:
        return None
    try:
        call.body = exact_json.loads(raw)
        return call.body
    except ValueError as exc:
        text = raw.decode("utf-8", "replace")
        if "x-www-form-urlencoded" in content_type:
            call.body = dict(parse_qsl(text, keep_blank_values=True))
        else:
            call.body_error = f"The request body is not valid JSON ({exc})"
        return text


class Sandbox:
    """A local stand-in for Encharge's REST and Ingest APIs, for rehearsing pipelines and for tests."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        write_key: str = DEFAULT_WRITE_KEY,
        schemas: Iterable[str] = DEFAULT_SCHEMAS,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        rate_limit: float | None = None,
        retry_after: float = 1,
        seed: int | None = None,
        verbose: bool = False,
        account_id: int = DEFAULT_ACCOUNT_ID,
        account_name: str = DEFAULT_ACCOUNT_NAME,
        duplicate_objects: bool = False,
        drop_unknown_fields: bool = False,
    ) -> None:
        """`account_id`/`account_name`: what GET /v1/accounts/info answers (two sandboxes, two accounts).
        `duplicate_objects`: POST /v1/objects/{name} with an existing externalId stores a second object
        instead of answering 409. `drop_unknown_fields`: a person or custom object write with a field the
        account does not have (GET /v1/fields, GET /v1/schemas) stores nothing of that field, as an account
        may; off, the value is kept and the field listed from then on."""
        _check_loopback(host)
        self.host, self.port, self.verbose = host, port, verbose
        self._store = Store(schemas, duplicate_objects=duplicate_objects, drop_unknown_fields=drop_unknown_fields)
        self._api = Api(self._store, api_key, write_key, account_id, account_name)
        self._faults = FaultInjector(Faults(latency_ms, error_rate, drop_rate, rate_limit, retry_after), seed)
        self._log = RequestLog()
        self._trace_ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="encharge-sandbox", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started: call start() first")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/v1"

    @property
    def ingest_url(self) -> str:
        return self.url + INGEST_PATH

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"<Sandbox {where}>"

    # --- control --------------------------------------------------------------------------------

    def set_faults(
        self,
        latency_ms: float | None = None,
        error_rate: float | None = None,
        drop_rate: float | None = None,
        rate_limit: float | None = None,
        retry_after: float | None = None,
    ) -> dict[str, Any]:
        """Change the given fault settings only (rate_limit=0 removes the limit); returns them all."""
        given = {
            "latency_ms": latency_ms,
            "error_rate": error_rate,
            "drop_rate": drop_rate,
            "rate_limit": rate_limit,
            "retry_after": retry_after,
        }
        return self._faults.set(**{k: v for k, v in given.items() if v is not None}).as_dict()

    @property
    def faults(self) -> dict[str, Any]:
        return self._faults.faults.as_dict()

    @property
    def options(self) -> dict[str, Any]:
        """The sandbox's modes: {"duplicate_objects": bool}."""
        return {"duplicate_objects": self._store.duplicate_objects}

    def set_options(self, *, duplicate_objects: bool | None = None) -> dict[str, Any]:
        """Change the given modes only; returns them all."""
        if duplicate_objects is not None:
            self._store.duplicate_objects = bool(duplicate_objects)
        return self.options

    @property
    def field_policy(self) -> dict[str, Any]:
        """What the account does with fields it does not have: {"drop_unknown_fields": bool}."""
        return {"drop_unknown_fields": self._store.drop_unknown_fields}

    def set_field_policy(self, *, drop_unknown_fields: bool | None = None) -> dict[str, Any]:
        """Change the given policy only; returns it all."""
        if drop_unknown_fields is not None:
            self._store.drop_unknown_fields = bool(drop_unknown_fields)
        return self.field_policy

    @property
    def account(self) -> dict[str, Any]:
        """{"accountId", "name"}, as GET /v1/accounts/info answers them."""
        return {"accountId": self._api.account_id, "name": self._api.account_name}

    def seed(
        self,
        people: Iterable[dict[str, Any]] = (),
        tags: Iterable[dict[str, Any]] = (),
        objects: dict[str, list[dict[str, Any]]] | None = None,
        *,
        fields: Iterable[dict[str, Any]] = (),
        object_fields: dict[str, list[dict[str, Any]]] | None = None,
        associations: Iterable[dict[str, Any]] = (),
    ) -> dict[str, int]:
        """Put people, tags ({"tag": "a,b", "email": ...}) and objects ({"company": [...]}) in the account as a
        flow or another tool would have: checked like API bodies, not in the request log. Returns the counts.
        `fields` and `object_fields` ({"company": [...]}) as POST /v1/fields takes them; `associations` as a
        record names a link: {"objectName": "person", "email": ..., "targetObjectName": "company",
        "targetExternalId": ...} (or "id"/"userId"/"externalId", "targetId", and "associationId")."""
        body = {
            "people": list(people),
            "tags": list(tags),
            "objects": dict(objects or {}),
            "fields": list(fields),
            "object_fields": dict(object_fields or {}),
            "associations": list(associations),
        }
        return self._api.seed(body)

    def clear_requests(self) -> None:
        """Forget the request log and its counts only; the account stays (to count what a rerun sends)."""
        self._log.clear()

    def reset(self) -> None:
        """Forget people, objects, events, associations, the fields and association definitions added since the
        start, and the request log; faults, options, the field policy, schemas and account stay."""
        self._store.clear()
        self._log.clear()
        self._faults.reset()

    # --- inspection -----------------------------------------------------------------------------

    def people(self) -> list[dict[str, Any]]:
        """Everyone in the account, archived people too (flagged "archived": true)."""
        return self._store.people()

    def deleted_people(self) -> list[dict[str, Any]]:
        """The identifiers of people deleted for good (DELETE /v1/people?force=true), with "deletedAt"."""
        return self._store.deleted_people()

    def person(
        self,
        email: str | None = None,
        userId: str | None = None,  # noqa: N803 - Encharge's names
        id: str | None = None,
    ) -> dict[str, Any] | None:
        return self._store.person({"id": id, "userId": userId, "email": email})

    def objects(self, name: str) -> list[dict[str, Any]]:
        return self._store.objects(name)

    def events(self) -> list[dict[str, Any]]:
        return self._store.events()

    def associations(self) -> list[dict[str, Any]]:
        """Every link made, oldest first: {"associationId", "fromObject", "fromId", "toObject", "toId"} (the
        ids are Encharge's: a person's id string, a custom object's number)."""
        return self._store.associations()

    def person_fields(self) -> list[dict[str, Any]]:
        """The person fields, as GET /v1/fields lists them."""
        return self._store.person_fields()

    def object_fields(self, name: str) -> list[dict[str, Any]]:
        """A custom object schema's fields, as GET /v1/schemas lists them."""
        return self._store.object_fields(name)

    def requests(self, limit: int | None = None, *, writes_only: bool = False) -> list[dict[str, Any]]:
        """The request log (the last `limit` entries); only POST, PUT, PATCH and DELETE with writes_only."""
        return [dict(entry) for entry in self._log.entries(limit, writes_only=writes_only)]

    def write_counts(self) -> dict[str, int]:
        """Write requests (POST, PUT, PATCH, DELETE) per endpoint, e.g. {"POST /v1/people": 2}, any answer."""
        return self._log.writes()

    def state(self) -> dict[str, Any]:
        """Everything that arrived, as the /_sandbox/state endpoint shows it."""
        state = self._store.snapshot()
        state["requests"] = {
            "total": self._log.total(),
            "counts": [{"endpoint": e, "status": s, "count": n} for e, s, n in self._log.counts()],
            "writes": self._log.writes(),
        }
        state["faults"] = self.faults
        state["options"] = self.options
        state["fieldPolicy"] = self.field_policy
        state["account"] = self.account
        state["schemas"] = list(self._store.schema_names)
        return state

    def summary(self) -> str:
        return report.render(self.state())

    def _trace_id(self) -> str:
        return f"sandbox-{next(self._trace_ids):08d}"
