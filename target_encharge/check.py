"""`target-encharge-check --config FILE` (or `--config ENV`): the start-up checks for every configured stream,
without data: settings, URLs, keys (one GET to Encharge), custom object names, the write key, and that the sync
ledger can be read; with `--catalog`, each stream's fields against the account's (the ones it lacks, the read-only
ones). One line per problem on stderr; exit 0 when none, 1 otherwise. It touches nothing: no file
is written or created (the ledger is opened read-only), nothing is sent but the start-up GETs. Meltano:
`meltano invoke target-encharge:check`."""

from __future__ import annotations

import argparse
import json
import sys
import typing as t
from pathlib import Path

from target_encharge.client import Client
from target_encharge.config import ENV, ENV_PREFIX, load, numbers_from_text
from target_encharge.errors import EnchargeTargetError
from target_encharge.ledger import SyncLedger
from target_encharge.preflight import Preflight
from target_encharge.redaction import Redactor
from target_encharge.settings import RunSettings, resolve
from target_encharge.templates import template_for
from target_encharge.urls import require_safe_url


def problems(config: dict[str, t.Any], catalog: dict[str, dict] | None = None) -> list[str]:
    """Every problem the start-up checks find in ``config``, one line each (keys and passwords never shown).
    ``catalog``: stream name -> its SCHEMA, whose fields are held against the account's (:func:`field_notes`)."""
    found, _notes = _checked(config, catalog or {})
    return found


def field_notes(config: dict[str, t.Any], catalog: dict[str, dict]) -> list[str]:
    """Per stream of ``catalog``, the fields the Encharge account lacks and the read-only ones (not problems)."""
    return _checked(config, catalog)[1]


def _checked(config: dict[str, t.Any], catalog: dict[str, dict]) -> tuple[list[str], list[str]]:
    try:
        settings = RunSettings.from_config(numbers_from_text(config))
        require_safe_url(settings.api_url, "api_url")
        require_safe_url(settings.ingest_url, "ingest_url")
    except EnchargeTargetError as exc:
        return [str(exc)], []
    redact = Redactor(settings.secrets, words=settings.passwords)
    found: list[str] = []
    try:
        with SyncLedger.open(settings.ledger_url, read_only=True):  # read-only: an absent SQLite file stays absent
            pass
    except EnchargeTargetError as exc:
        found.append(redact(str(exc)))
    client = Client.for_settings(settings, pool_size=1)
    preflight = Preflight(client, settings.api_url)
    try:
        for stream in ("*", *(config.get("streams") or {})):
            shown = "the top-level settings" if stream == "*" else f"streams.{stream}"
            try:
                stream_settings = resolve(config, stream)
                template = template_for(stream_settings, settings.api_url, settings.ingest_url)
                preflight.before_sending(stream if stream != "*" else "(default)", template, stream_settings)
            except EnchargeTargetError as exc:
                found.append(f"{shown}: {redact(str(exc))}")
        notes = _notes(config, catalog, settings, preflight, found)
    finally:
        client.close()
    return found, notes


def _notes(
    config: dict[str, t.Any], catalog: dict[str, dict], settings: RunSettings, preflight: Preflight, found: list[str]
) -> list[str]:
    """What the field contract finds for each stream of the catalog (issue 24)."""
    notes: list[str] = []
    for stream, schema in catalog.items():
        try:
            stream_settings = resolve(config, stream)
            template = template_for(stream_settings, settings.api_url, settings.ingest_url)
            contract = preflight.contract_of(stream, template, schema, stream_settings.exclude_attributes)
        except EnchargeTargetError as exc:
            found.append(f"stream {stream}: {exc}")
            continue
        if contract is None:
            continue
        if contract.missing:
            creates = "created first" if stream_settings.create_missing_fields else "Encharge may drop them"
            notes.append(
                f"stream {stream}: fields the account's {contract.owner} fields lack: "
                f"{', '.join(contract.missing)} ({creates})"
            )
        if contract.read_only:
            notes.append(f"stream {stream}: read-only in Encharge, left out: {', '.join(sorted(contract.read_only))}")
    return notes


def read_catalog(path: str) -> dict[str, dict]:
    """Stream name -> SCHEMA from a Singer catalog (`tap --discover`) or a file of Singer messages (its SCHEMA
    lines)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        catalog = json.loads(text)
    except ValueError:
        catalog = None
    if isinstance(catalog, dict) and isinstance(catalog.get("streams"), list):
        return {
            str(s.get("stream") or s.get("tap_stream_id")): s.get("schema") or {}
            for s in catalog["streams"]
            if isinstance(s, dict)
        }
    schemas: dict[str, dict] = {}
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "SCHEMA":
            schemas[str(message.get("stream"))] = message.get("schema") or {}
    return schemas


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="target-encharge-check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help=f"a config JSON file (repeatable, later ones win), or {ENV} for {ENV_PREFIX}* variables",
    )
    parser.add_argument(
        "--catalog",
        help="a Singer catalog (`tap --discover`) or a file of Singer messages: each stream's fields are held "
        "against the account's (those it lacks, the read-only ones)",
    )
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        catalog = read_catalog(args.catalog) if args.catalog else {}
    except (EnchargeTargetError, OSError) as exc:
        print(f"target-encharge-check: {exc}", file=sys.stderr)
        return 1
    found, notes = _checked(config, catalog)
    for note in notes:
        print(f"target-encharge-check: note: {note}", file=sys.stderr)
    for problem in found:
        print(f"target-encharge-check: {problem}", file=sys.stderr)
    if not found:
        print("target-encharge-check: ok: every configured stream passed the start-up checks", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
