"""`target-encharge-check --config FILE` (or `--config ENV`): the start-up checks for every configured stream,
without data: settings, URLs, keys (one GET to Encharge), custom object names, the write key, and that the sync
ledger can be read. One line per problem on stderr; exit 0 when none, 1 otherwise. It touches nothing: no file
is written or created (the ledger is opened read-only), nothing is sent but the start-up GETs. Meltano:
`meltano invoke target-encharge:check`."""

from __future__ import annotations

import argparse
import sys
import typing as t

from target_encharge.checks import StartupChecks
from target_encharge.client import Client, RateLimiter
from target_encharge.config import ENV, ENV_PREFIX, load, numbers_from_text
from target_encharge.errors import EnchargeTargetError
from target_encharge.ledger import SyncLedger
from target_encharge.redaction import Redactor
from target_encharge.retry import RetryPolicy
from target_encharge.settings import RunSettings, resolve
from target_encharge.templates import template_for
from target_encharge.urls import Credentials, check_url


def problems(config: dict[str, t.Any]) -> list[str]:
    """Every problem the start-up checks find in ``config``, one line each (keys and passwords never shown)."""
    try:
        settings = RunSettings.from_config(numbers_from_text(config))
        check_url(settings.api_url, "api_url")
        check_url(settings.ingest_url, "ingest_url")
    except EnchargeTargetError as exc:
        return [str(exc)]
    redact = Redactor(settings.secrets, words=settings.passwords)
    found: list[str] = []
    try:
        with SyncLedger.open(settings.ledger_url, read_only=True):  # read-only: an absent SQLite file stays absent
            pass
    except EnchargeTargetError as exc:
        found.append(redact(str(exc)))
    credentials = Credentials(settings.api_url, settings.ingest_url, settings.api_key, settings.write_key)
    client = Client(
        credentials,
        RetryPolicy(max_retries=settings.max_retries, backoff=settings.retry_backoff),
        timeout=settings.request_timeout,
        rate=RateLimiter(settings.max_requests_per_second),
        pool_size=1,
    )
    checks = StartupChecks(client, settings.api_url)
    try:
        for stream in ("*", *(config.get("streams") or {})):
            shown = "the top-level settings" if stream == "*" else f"streams.{stream}"
            try:
                stream_settings = resolve(config, stream)
                template = template_for(stream_settings, settings.api_url, settings.ingest_url)
                checks.before_sending(stream if stream != "*" else "(default)", template, stream_settings)
            except EnchargeTargetError as exc:
                found.append(f"{shown}: {redact(str(exc))}")
    finally:
        client.close()
    return found


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="target-encharge-check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help=f"a config JSON file (repeatable, later ones win), or {ENV} for {ENV_PREFIX}* variables",
    )
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except EnchargeTargetError as exc:
        print(f"target-encharge-check: {exc}", file=sys.stderr)
        return 1
    found = problems(config)
    for problem in found:
        print(f"target-encharge-check: {problem}", file=sys.stderr)
    if not found:
        print("target-encharge-check: ok: every configured stream passed the start-up checks", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
