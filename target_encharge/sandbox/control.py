"""The /_sandbox/ endpoints: inspect what arrived, change faults, modes and the field policy, seed, reset.

No auth, no faults, not in the request log. Each endpoint is one method of the Sandbox it serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from . import exact_json
from .api import envelope
from .errors import ApiError
from .schemas import BodyError, validate_faults, validate_field_policy, validate_options, validate_seed

if TYPE_CHECKING:
    from .server import Sandbox

PREFIX = "/_sandbox/"
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

Answer = tuple[int, Any, str]


def handle(sandbox: Sandbox, method: str, path: str, query_string: str, raw: bytes) -> Answer:
    """Answer one /_sandbox/ request: (status, payload, content type)."""
    query = dict(parse_qsl(query_string))
    name = path[len(PREFIX) :].rstrip("/")
    try:
        if (method, name) == ("GET", "state"):
            return 200, sandbox.state(), JSON_TYPE
        if (method, name) == ("GET", "requests"):
            limit = int(query.get("limit") or 0)
            writes_only = query.get("writes", "").lower() == "true"
            return 200, {"requests": sandbox.requests(limit or None, writes_only=writes_only)}, JSON_TYPE
        if (method, name) == ("DELETE", "requests"):
            sandbox.clear_requests()
            return 200, {"cleared": True}, JSON_TYPE
        if (method, name) == ("GET", "summary"):
            return 200, sandbox.summary(), TEXT_TYPE
        if (method, name) == ("GET", "faults"):
            return 200, {"faults": sandbox.faults}, JSON_TYPE
        if (method, name) == ("POST", "faults"):
            changes = exact_json.loads(raw or b"{}")
            validate_faults(changes)
            if "rate_limit" in changes and changes["rate_limit"] is None:
                changes["rate_limit"] = 0
            return 200, {"faults": sandbox.set_faults(**changes)}, JSON_TYPE
        if (method, name) == ("GET", "options"):
            return 200, {"options": sandbox.options}, JSON_TYPE
        if (method, name) == ("POST", "options"):
            changes = exact_json.loads(raw or b"{}")
            validate_options(changes)
            return 200, {"options": sandbox.set_options(**changes)}, JSON_TYPE
        if (method, name) == ("GET", "field-policy"):
            return 200, {"fieldPolicy": sandbox.field_policy}, JSON_TYPE
        if (method, name) == ("POST", "field-policy"):
            changes = exact_json.loads(raw or b"{}")
            validate_field_policy(changes)
            return 200, {"fieldPolicy": sandbox.set_field_policy(**changes)}, JSON_TYPE
        if (method, name) == ("POST", "seed"):
            parts = exact_json.loads(raw or b"{}")
            validate_seed(parts)
            return 200, {"seeded": sandbox.seed(**parts)}, JSON_TYPE
        if (method, name) == ("POST", "reset"):
            sandbox.reset()
            return 200, {"reset": True}, JSON_TYPE
    except ApiError as exc:
        return exc.status, envelope(exc.message, sandbox._trace_id()), JSON_TYPE
    except (ValueError, BodyError) as exc:
        return 400, envelope(str(exc), sandbox._trace_id()), JSON_TYPE
    return 404, envelope(f"Cannot {method} {path}", sandbox._trace_id()), JSON_TYPE
