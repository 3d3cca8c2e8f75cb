"""A local Encharge stand-in (REST + Ingest) to rehearse pipelines without touching a real account.

    from target_encharge.sandbox import Sandbox
    with Sandbox() as sb:            # free port on 127.0.0.1
        ...  # point target-encharge at sb.api_url and sb.ingest_url, then look at sb.people(), sb.summary()

It serves people, tags, custom objects, Ingest events, person and object fields (GET/POST /v1/fields,
GET /v1/schemas, POST /v1/schemas/{name}/fields), associations by Encharge ids and unsubscribes; see api.py.
"""

from .server import DEFAULT_API_KEY, DEFAULT_SCHEMAS, DEFAULT_WRITE_KEY, Sandbox

__all__ = ["Sandbox", "DEFAULT_API_KEY", "DEFAULT_WRITE_KEY", "DEFAULT_SCHEMAS"]
