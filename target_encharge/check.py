"""`target-encharge-check --config FILE` (or `--config ENV`): the start-up checks for every configured stream,
without data: settings, URLs, keys (one GET to Encharge), custom object names, the write key. One line per
problem on stderr; exit 0 when none, 1 otherwise. Meltano: `meltano invoke target-encharge:check`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing as t
from pathlib import Path

from target_encharge.errors import EnchargeTargetError
from target_encharge.run import Run
from target_encharge.settings import SETTINGS_SCHEMA, RunSettings, from_environment, numbers_from_text, resolve
from target_encharge.templates import template_for
from target_encharge.urls import check_url

ENV_PREFIX = "TARGET_ENCHARGE_"
logger = logging.getLogger("target_encharge")


def problems(config: dict[str, t.Any]) -> list[str]:
    """Every problem the start-up checks find in ``config``, one line each (keys never shown)."""
    try:
        config = numbers_from_text(config)
        settings = RunSettings.from_config(config)
        check_url(settings.api_url, "api_url")
        check_url(settings.ingest_url, "ingest_url")
    except EnchargeTargetError as exc:
        return [str(exc)]
    found: list[str] = []
    run = Run.start(settings, logger)
    try:
        for stream in ("*", *(config.get("streams") or {})):
            shown = "the top-level settings" if stream == "*" else f"streams.{stream}"
            try:
                stream_settings = resolve(config, stream)
                template = template_for(stream_settings, settings.api_url, settings.ingest_url)
                run.checks.before_sending(stream if stream != "*" else "(default)", template, stream_settings)
            except EnchargeTargetError as exc:
                found.append(f"{shown}: {run.redact(str(exc))}")
    finally:
        run.delivery.close()
    return found


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="target-encharge-check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True,
                        help="a config JSON file (repeatable, later ones win), or ENV for TARGET_ENCHARGE_* variables")
    args = parser.parse_args(argv)
    config: dict[str, t.Any] = {}
    try:
        for source in args.config:
            config.update(from_environment(SETTINGS_SCHEMA, ENV_PREFIX) if source == "ENV"
                          else json.loads(Path(source).read_text()))
    except (OSError, ValueError, EnchargeTargetError) as exc:
        print(f"target-encharge-check: cannot read the config: {exc}", file=sys.stderr)
        return 1
    found = problems(config)
    for problem in found:
        print(f"target-encharge-check: {problem}", file=sys.stderr)
    if not found:
        print("target-encharge-check: ok: every configured stream passed the start-up checks", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
