"""`target-encharge-sandbox`: run the local Encharge stand-in, or print the summary of a running one."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import urllib.error
import urllib.request
from typing import Sequence

from .server import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_ACCOUNT_NAME,
    DEFAULT_API_KEY,
    DEFAULT_SCHEMAS,
    DEFAULT_WRITE_KEY,
    Sandbox,
)


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="target-encharge-sandbox",
        description="A local Encharge stand-in (REST + Ingest) for rehearsing pipelines. "
        "`target-encharge-sandbox summary --url URL` prints what a running sandbox received.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 for a free one)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="REST API key (default %(default)s)")
    parser.add_argument("--write-key", default=DEFAULT_WRITE_KEY, help="Ingest write key (default %(default)s)")
    parser.add_argument(
        "--schemas",
        default=",".join(DEFAULT_SCHEMAS),
        help="custom object schema names, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--account-id",
        type=int,
        default=DEFAULT_ACCOUNT_ID,
        help="the accountId GET /v1/accounts/info answers (default %(default)s)",
    )
    parser.add_argument(
        "--account-name",
        default=DEFAULT_ACCOUNT_NAME,
        help="the account name GET /v1/accounts/info answers (default %(default)r)",
    )
    parser.add_argument(
        "--duplicate-objects",
        action="store_true",
        help="POST /v1/objects/{name} with an existing externalId stores a duplicate (default: 409)",
    )
    parser.add_argument(
        "--drop-unknown-fields",
        action="store_true",
        help="person and custom object writes drop fields the account does not have "
        "(default: keep them, and list the field from then on)",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="latency added to every API answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of API answers that are 500s")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of API requests dropped unanswered")
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="API requests per second above which the answer is 429"
    )
    parser.add_argument("--retry-after", type=float, default=1, help="Retry-After seconds on 429 (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible fault choices")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _summary(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="target-encharge-sandbox summary", description="Print the summary of a running sandbox."
    )
    parser.add_argument("--url", default="http://127.0.0.1:8765", help="the sandbox URL (default %(default)s)")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    for suffix in ("/ingest/v1", "/v1"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if not base.startswith(("http://", "https://")):
        print(f"target-encharge-sandbox: --url must be an http:// URL, not {args.url!r}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(base + "/_sandbox/summary", timeout=10) as answer:  # noqa: S310 - http(s) only
            sys.stdout.write(answer.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        print(f"target-encharge-sandbox: no sandbox answering at {base} ({exc})", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summary"]:
        return _summary(argv[1:])
    args = _serve_parser().parse_args(argv)
    try:
        sandbox = Sandbox(
            api_key=args.api_key,
            write_key=args.write_key,
            schemas=[s.strip() for s in args.schemas.split(",") if s.strip()],
            host=args.host,
            port=args.port,
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            rate_limit=args.rate_limit,
            retry_after=args.retry_after,
            seed=args.seed,
            verbose=args.verbose,
            account_id=args.account_id,
            account_name=args.account_name,
            duplicate_objects=args.duplicate_objects,
            drop_unknown_fields=args.drop_unknown_fields,
        ).start()
    except (ValueError, OSError) as exc:
        print(f"target-encharge-sandbox: {exc}", file=sys.stderr)
        return 2

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(
        f"Encharge sandbox: REST {sandbox.api_url}  Ingest {sandbox.ingest_url}  "
        f"(summary: target-encharge-sandbox summary --url {sandbox.url}; Ctrl-C to stop)",
        flush=True,
    )
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
