"""The one config loader: what ``--config`` names (JSON files, and ``ENV`` for the TARGET_ENCHARGE_* variables
Meltano sets) read into one config, its numbers typed, and checked against the settings schema the way the SDK
checks the target's. The target (through the SDK's ``--config``), ``target-encharge-check`` and
``target-encharge-ledger`` all read their config here, so a setting is refused in the same words by each."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

from target_encharge.errors import ConfigError
from target_encharge.sdk import config_errors, parse_environment_config
from target_encharge.settings import SETTINGS_SCHEMA

ENV_PREFIX = "TARGET_ENCHARGE_"  # the SDK's prefix for a target named target-encharge (tests/test_sdk_seams.py)
ENV = "ENV"  # the --config value that reads the environment


def numbers_from_text(config: t.Mapping[str, t.Any], schema: dict = SETTINGS_SCHEMA) -> dict[str, t.Any]:
    """Number settings given as text (``"0.5"``) as numbers: environment variables are text, and so is what
    Meltano passes for them (they are ``kind: string`` there: its ``decimal`` kind fails when set from a variable)."""
    config = dict(config)
    for name, value in config.items():
        if isinstance(value, str) and "number" in schema["properties"].get(name, {}).get("type", ()):
            try:
                config[name] = float(value)
            except ValueError:
                msg = f"{name}: {value!r} is not a number"
                raise ConfigError(msg) from None
    return config


def from_environment(schema: dict = SETTINGS_SCHEMA, prefix: str = ENV_PREFIX) -> dict[str, t.Any]:
    """``--config ENV``: the SDK's reading of ``<prefix><SETTING>`` variables, with numbers made numbers (the SDK
    leaves them as text) and ``request_headers`` kept as text (the SDK would take any text for JSON)."""
    properties = {**schema["properties"], "request_headers": {"type": ["string", "null"]}}
    try:
        config = parse_environment_config({**schema, "properties": properties}, prefix)
    except ValueError as exc:  # an object or array setting whose text is not JSON; the text itself is not shown
        msg = f"a {prefix}* variable for an object or array setting is not valid JSON ({exc})"
        raise ConfigError(msg) from None
    for name in ("streams", "stream_maps"):
        if isinstance(config.get(name), dict):
            config[name] = _nested(config[name])
    return numbers_from_text(config, schema)


def _nested(flat: dict[str, t.Any]) -> dict[str, t.Any]:
    """An object setting as Meltano passes it to plugin commands, with dotted keys (``{"tags.endpoint":
    "add_tag"}``), nested again (``{"tags": {"endpoint": "add_tag"}}``); a stream name may itself hold dots."""
    nested: dict[str, t.Any] = {}
    for key, value in flat.items():
        stream, dot, setting = key.rpartition(".")
        if dot and stream:
            entry = nested.setdefault(stream, {})
            if isinstance(entry, dict):
                entry[setting] = value
        else:
            nested[key] = value
    return nested


def read_file(path: str) -> dict[str, t.Any]:
    """A config JSON file's object."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read the config file {path}: {type(exc).__name__}"
        raise ConfigError(msg) from None
    if not isinstance(config, dict):
        msg = f"the config file {path} is not a JSON object"
        raise ConfigError(msg)
    return config


def load(sources: t.Iterable[str]) -> dict[str, t.Any]:
    """The config that ``--config`` values name (files, or ``ENV``; later ones win), checked (:func:`validate`)."""
    config: dict[str, t.Any] = {}
    for source in sources:
        config.update(from_environment() if source == ENV else read_file(source))
    config = numbers_from_text(config)
    validate(config)
    return config


def validate(config: t.Mapping[str, t.Any], schema: dict = SETTINGS_SCHEMA) -> None:
    """The settings check: a setting of the wrong type (``ledger_url: 123``) or value refused, in one line."""
    errors = config_errors(schema, config)
    if errors:
        raise ConfigError(refusal(errors))


def refusal(errors: t.Iterable[str]) -> str:
    """The one line for what the settings check found (the SDK's words, a secret's value never quoted)."""
    return "invalid config: " + "; ".join(_masked(error) for error in errors)


def _masked(error: str) -> str:
    """A problem with a secret setting never quotes its value (the SDK's message starts with the value)."""
    for name, spec in SETTINGS_SCHEMA["properties"].items():
        if spec.get("secret") and f"config['{name}']" in error:
            return f"{name} must be a string (its value is not shown: it is a secret)"
    return error
