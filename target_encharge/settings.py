"""Settings: the schema users configure, and how one stream's settings are resolved.

A stream's settings are the top-level values, overridden by ``streams.<name>``. Everything a sink needs to
know about its stream comes from :func:`resolve`, and everything the run needs from :class:`RunSettings`, so
nothing else reads raw config. The schema is the one home of defaults (:func:`default`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing as t
import urllib.parse

from singer_sdk import typing as th

from target_encharge.errors import ConfigError

ENDPOINTS = (
    "create_or_update_person",
    "add_tag",
    "remove_tag",
    "create_custom_object",
    "track_event",
    "manual",
    # issue 24: associations and consent
    "add_association",
    "remove_association",
    "unsubscribe_person",
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CONTENT_TYPES = ("application/json", "application/x-ndjson", "application/x-www-form-urlencoded")
GROUPING_ALGORITHMS = ("sequential", "by_field")
RESPONSE_OUTPUTS = ("none", "state", "stream")
SYNC_MODES = ("upsert", "update", "create", "mirror")
DELETE_ACTIONS = ("archive", "delete")
DEFAULT_DEAD_LETTER_PATH = "target-encharge-dead-letters.jsonl"
DEFAULT_LEDGER_FILE = ".target-encharge-ledger.db"  # ledger_url unset: in the working directory, a project's own
DEFAULT_LEDGER_TIMEOUT = 30.0  # seconds the ledger waits for a locked SQLite file or to connect to its server
BATCHED_BY_DEFAULT = ("create_or_update_person", "create_custom_object")  # their API takes arrays
MAX_CONCURRENCY = 64  # calls in flight at once, at the most
MAX_BACKOFF = 30.0  # seconds: the longest wait between retries of our own choosing (a Retry-After may ask more)
MIN_KEY_CHARS = 8  # a shorter key could not be masked in outputs without masking ordinary text


def _stream_properties() -> list[th.Property]:
    """The settings a stream may override (one definition, used at the top level and under `streams`)."""
    return [
        th.Property(
            "endpoint",
            th.StringType(allowed_values=list(ENDPOINTS)),
            default="create_or_update_person",
            description="Encharge endpoint template for the stream: " + ", ".join(f"`{e}`" for e in ENDPOINTS),
        ),
        th.Property(
            "object_name",
            th.StringType,
            description="`create_custom_object`: the custom object schema name (case-sensitive), "
            "checked against `GET /v1/schemas` before anything is sent; `add_association`, `remove_association`: "
            "the source side (default `person`).",
        ),
        th.Property(
            "method",
            th.StringType(allowed_values=list(METHODS)),
            default="POST",
            description="`manual`: HTTP method.",
        ),
        th.Property(
            "url",
            th.StringType,
            description="`manual`: absolute URL or a path relative to `api_url`; `{field}` placeholders are "
            "filled from the record, percent-encoded.",
        ),
        th.Property(
            "content_type",
            th.StringType(allowed_values=list(CONTENT_TYPES)),
            default="application/json",
            description="`manual`: body encoding.",
        ),
        th.Property(
            "request_headers",
            th.CustomType({"type": ["string", "object", "null"]}),
            description='Extra request headers, as `"h1:v1,h2:v2"` or `{"h1": "v1"}`.',
        ),
        th.Property(
            "exclude_attributes",
            th.ArrayType(th.StringType),
            default=[],
            description="Record fields never sent to Encharge.",
        ),
        th.Property(
            "batch_records",
            th.BooleanType,
            description="Send several records per call (`manual`, `create_or_update_person`, "
            "`create_custom_object`). Unset: on for "
            + " and ".join(f"`{e}`" for e in BATCHED_BY_DEFAULT)
            + " (their API takes an array), off otherwise.",
        ),
        th.Property("batch_size", th.IntegerType, default=100, description="Most records per call."),
        th.Property(
            "grouping_algorithm",
            th.StringType(allowed_values=list(GROUPING_ALGORITHMS)),
            default="sequential",
            description="`sequential`: records in arrival order; `by_field`: a call holds only records with "
            "the same value of `group_by`.",
        ),
        th.Property("group_by", th.StringType, description="The field `by_field` groups on."),
        th.Property(
            "sync_mode",
            th.StringType(allowed_values=list(SYNC_MODES)),
            default="upsert",
            description="`upsert`: create or update; `update`: only people or custom objects already in Encharge "
            "(nobody is created); `create`: only those not yet in Encharge; `mirror`: upsert, and remove from "
            "Encharge what left the source (on the tap's ACTIVATE_VERSION, or a record with `_sdc_deleted_at`). "
            "People and custom objects take all four, `add_tag` and `add_association` `upsert` and `mirror`, the "
            "others `upsert`.",
        ),
        th.Property(
            "delete_action",
            th.StringType(allowed_values=list(DELETE_ACTIONS)),
            default="archive",
            description="How `mirror` removes a person: `archive` (Encharge's preferred way) or `delete` (the "
            "person and their data, for GDPR).",
        ),
        # issue 22: mirror's removals only from complete snapshots
        th.Property(
            "mirror_confirmations",
            th.IntegerType,
            default=2,
            description="`mirror`, for taps that announce a full table before its records and send nothing after "
            "them (singer-sdk taps): how many complete full tables in a row a record must be missing from before "
            "it is removed (1: the first; a tap that closes its full tables with ACTIVATE_VERSION needs one).",
        ),
        *_b2b_stream_properties(),
    ]


def _b2b_stream_properties() -> list[th.Property]:
    """Issue 24: associations, consent and the field contract (per stream)."""
    return [
        th.Property(
            "target_object_name",
            th.StringType,
            description="`add_association`, `remove_association`: the custom object schema on the other side of "
            "the association (e.g. `company`); the record names it by `targetExternalId` (or `targetId`, its "
            "Encharge id). The source side is `object_name`, default `person`.",
        ),
        th.Property(
            "association_id",
            th.IntegerType,
            description="`add_association`, `remove_association`: the association's id (`GET /v1/schemas` lists "
            "them); unset, the one association between the two objects.",
        ),
        th.Property(
            "allow_resubscribe",
            th.BooleanType,
            default=False,
            description="Person upserts send `unsubscribed: false` as it comes; off, it is left out (a sync never "
            "re-subscribes someone who opted out), with one warning per run counting it.",
        ),
        th.Property(
            "create_missing_fields",
            th.BooleanType,
            default=False,
            description="Before sending, create the person or custom object fields the Encharge account lacks "
            "(`POST /v1/fields`, `POST /v1/schemas/{name}/fields`), typed from the stream's SCHEMA; off, each is "
            "named once per run (Encharge may drop it).",
        ),
    ]


SETTINGS_SCHEMA: dict = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType,
        secret=True,
        description="Encharge REST API key, sent as `X-Encharge-Token` (Encharge: Settings, API keys).",
    ),
    th.Property(
        "write_key",
        th.StringType,
        secret=True,
        description="Encharge Ingest write key; required only when a stream uses `track_event`.",
    ),
    th.Property(
        "api_url",
        th.StringType,
        default="https://api.encharge.io/v1",
        description="REST base URL (point it at the sandbox to rehearse).",
    ),
    th.Property(
        "ingest_url",
        th.StringType,
        default="https://ingest.encharge.io/v1",
        description="Ingest API URL, used by `track_event`.",
    ),
    *_stream_properties(),
    th.Property(
        "streams",
        th.ObjectType(additional_properties=th.ObjectType(*_stream_properties())),
        default={},
        description="Per stream name, any of the per-stream settings, overriding the top-level ones.",
    ),
    th.Property(
        "ledger_url",
        th.StringType,
        secret=True,
        description="Where the sync ledger (what was delivered, remembered between runs) lives: a file path, "
        "`sqlite:///path`, or `postgresql://user:password@host:port/db` (extra `target-encharge[postgres]`). "
        f"Unset: `{DEFAULT_LEDGER_FILE}` in the working directory.",
    ),
    th.Property(
        "skip_unchanged",
        th.BooleanType,
        default=True,
        description="A record whose payload equals what was last delivered for the same identity is not sent.",
    ),
    th.Property(
        "resync",
        th.BooleanType,
        default=False,
        description="Send every record as if never sent (the ledger is refreshed).",
    ),
    th.Property(
        "retry_failed",
        th.BooleanType,
        default=True,
        description="Records that failed in an earlier run for a reason that can pass (429, 5xx, timeout, dropped "
        "connection, a tag whose person was not there yet) are sent again when their stream next comes.",
    ),
    th.Property(
        "max_delete_share",
        th.NumberType,
        default=0.2,
        description="`mirror` refuses a stream's removals, all of them, when they would remove more than this "
        "share of what the ledger knows for it.",
    ),
    th.Property(
        "response_output",
        th.StringType(allowed_values=list(RESPONSE_OUTPUTS)),
        default="none",
        description="`none`; `state`: a bounded summary of responses inside the emitted STATE; "
        "`stream`: every response as a RECORD of a Singer stream.",
    ),
    th.Property(
        "response_stream_path",
        th.StringType,
        description="`stream` mode: file to write the response stream to; `-` or unset means stdout, which then "
        "carries a pure Singer stream (the tap's STATE as STATE messages) for another target to load.",
    ),
    th.Property(
        "dead_letter_path",
        th.StringType,
        description="JSONL file receiving every record that failed for good, with its stream, reason and response; "
        f"unset: `{DEFAULT_DEAD_LETTER_PATH}` in the working directory, created when a first record fails. "
        "Never stdout (`-` is refused: under Meltano stdout is state).",
    ),
    th.Property(
        "max_failures",
        th.IntegerType,
        default=0,
        description="Records that may fail for good before the run fails; `-1` for no limit.",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description="Send nothing (not even the start-up checks); show each request that would be sent "
        "(method, URL, headers with the keys masked, body) as a JSON line on `preview_path`; records that would be "
        "refused are still refused, dead-lettered and shown; emit no STATE.",
    ),
    th.Property(
        "test_send",
        th.BooleanType,
        default=False,
        description="Send only the first record of each stream and show each call with Encharge's full answer "
        "(status, headers, parsed body) as a JSON line on `preview_path`; emit no STATE.",
    ),
    th.Property(
        "preview_path",
        th.StringType,
        description="`dry_run` and `test_send`: file to write their JSON lines to; `-` or unset means stderr "
        "(never stdout, which carries only Singer messages: under Meltano it is read as state).",
    ),
    th.Property(
        "progress_interval",
        th.NumberType,
        default=10,
        description="Seconds between progress lines in the log (records handled, records per second, failures); "
        "0 turns them off.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=5,
        description="Retries of one call on 429, 5xx, timeouts and dropped connections.",
    ),
    th.Property(
        "retry_backoff",
        th.NumberType,
        default=0.5,
        description="Seconds before the first retry when Encharge gives no Retry-After; doubles on each retry "
        f"(with jitter, at most {MAX_BACKOFF:g} s).",
    ),
    th.Property(
        "request_timeout",
        th.NumberType,
        default=30,
        description="Seconds per call, the whole call (connecting, sending, reading the answer); more than 0.",
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType,
        default=4,
        description=f"Calls in flight at once, 1 to {MAX_CONCURRENCY}.",
    ),
    th.Property(
        "shutdown_grace_period",
        th.NumberType,
        default=30,
        description="On SIGTERM or SIGINT: seconds to finish the calls for what was read before the run stops "
        "(what is not done by then keeps its STATE back, so the tap sends it again).",
    ),
    th.Property(
        "max_requests_per_second",
        th.NumberType,
        description="Cap on calls per second, all streams together.",
    ),
    # issue 23: overlapping runs on one ledger (a lease per account, destination and stream)
    th.Property(
        "lease_ttl",
        th.NumberType,
        default=60,
        description="Seconds a run's hold on a stream (its lease in the sync ledger) lasts unless renewed; the run "
        "renews it every third of that. A run that dies (kill -9) holds its streams this long at most.",
    ),
    th.Property(
        "lease_wait",
        th.NumberType,
        default=300,
        description="Seconds a run waits for a stream another run holds (an hourly run overlapping the last one) "
        "before it stops, naming the holder; 0: stop at once.",
    ),
).to_dict()

# Issue 25: operating it hourly (a baseline, the failure-share alert, the run's report and its notification).
NOTIFY_ON = ("always", "failure")
NOTIFY_TIMEOUT = 10.0  # seconds a notification may take; past it, it is logged and the run goes on
SETTINGS_SCHEMA["properties"].update(
    th.PropertiesList(
        th.Property(
            "baseline",
            th.BooleanType,
            default=False,
            description="Fill the sync ledger from the input as if every record had been delivered, and send "
            "nothing (the start-up checks still read the account); the tap's STATE is released, so the next run "
            "sends only what changed. For people already in Encharge from another tool.",
        ),
        th.Property(
            "max_failure_share",
            th.NumberType,
            description="Past this share (0 to 1) of a stream's records failed for good, the run exits 1, after "
            "delivering the rest and emitting STATE (beside `max_failures`, which counts records). Unset: no limit.",
        ),
        th.Property(
            "report_path",
            th.StringType,
            description="A JSON report of each run, written at its end: the run-history row (counts per stream, "
            "how it ended) and failures by reason with up to ten examples by identifiers, never secrets.",
        ),
        th.Property(
            "notify_url",
            th.StringType,
            description="POST the run's report here at its end (`notify_on`), signed with "
            "`X-Target-Encharge-Signature: sha256=<HMAC-SHA256 hex of the body keyed with notify_secret>`; "
            f"a notification that fails or takes more than {NOTIFY_TIMEOUT:g} s is logged, never fails the run.",
        ),
        th.Property(
            "notify_secret",
            th.StringType,
            secret=True,
            description="The key of the notification's signature (unset: the report goes unsigned).",
        ),
        th.Property(
            "notify_on",
            th.StringType(allowed_values=list(NOTIFY_ON)),
            default="failure",
            description="`always`: every run's report goes to `notify_url`; `failure`: only a run that exits non-zero.",
        ),
    ).to_dict()["properties"]
)


@dataclasses.dataclass(frozen=True)
class OperationsSettings:
    """Issue 25's settings: a baseline, the failure-share alert, the report and its notification."""

    baseline: bool
    max_failure_share: float | None
    report_path: str | None
    notify_url: str | None
    notify_secret: str | None
    notify_on: str

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> OperationsSettings:
        share = _setting(config, "max_failure_share")
        settings = cls(
            baseline=bool(_setting(config, "baseline")),
            max_failure_share=None if share is None else float(share),
            report_path=_text(config, "report_path"),
            notify_url=_text(config, "notify_url"),
            notify_secret=_text(config, "notify_secret"),
            notify_on=str(_setting(config, "notify_on")),
        )
        if settings.max_failure_share is not None and not 0 <= settings.max_failure_share <= 1:
            msg = "max_failure_share must be between 0 and 1"
            raise ConfigError(msg)
        if settings.report_path == "-":
            msg = "report_path cannot be stdout ('-'): under Meltano stdout is state; name a file"
            raise ConfigError(msg)
        return settings

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.notify_secret,) if self.notify_secret else ()


def _text(config: t.Mapping[str, t.Any], name: str) -> str | None:
    value = _setting(config, name)
    return None if value is None else str(value)


def secret_setting(name: str) -> bool:
    """Whether a top-level setting is a secret (never shown, left out of the settings' fingerprint)."""
    return bool(SETTINGS_SCHEMA["properties"].get(name, {}).get("secret"))


# Under `streams`, an unset setting falls back to the top level: no defaults there (the SDK would fill them in).
for _stream_setting in SETTINGS_SCHEMA["properties"]["streams"]["additionalProperties"]["properties"].values():
    _stream_setting.pop("default", None)

STREAM_SETTING_NAMES = tuple(p.name for p in _stream_properties())
_TOP_LEVEL = SETTINGS_SCHEMA["properties"]


def default(name: str) -> t.Any:  # noqa: ANN401
    """A setting's default, as the settings schema says (None where it has none)."""
    return _TOP_LEVEL[name].get("default")


def _setting(config: t.Mapping[str, t.Any], name: str) -> t.Any:  # noqa: ANN401
    """A top-level setting: its value, or its default when unset (None or empty text)."""
    value = config.get(name)
    return default(name) if value is None or value == "" else value


def parse_headers(value: str | dict | None) -> dict[str, str]:
    """Extra headers as users paste them (``"h1:v1,h2:v2"``), as an object, or as that object's JSON text
    (how an environment variable carries it); CR/LF is refused."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            msg = "request_headers: text starting with '{' is not a JSON object"
            raise ConfigError(msg) from None
    if not value:
        return {}
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, val = part.partition(":")
            if not sep:
                msg = f"request_headers: '{part.strip()}' is not 'name:value'"
                raise ConfigError(msg)
            pairs.append((name, val))
    else:
        pairs = list(value.items())
    headers = {}
    for name, val in pairs:
        line_break = any(c in str(name) + str(val) for c in "\r\n")  # even at the end: never trimmed away
        name, val = str(name).strip(), str(val).strip()
        if not name or line_break or any(c in name for c in " :"):
            msg = f"request_headers: header {name!r} has an invalid name or a line break in its value"
            raise ConfigError(msg)
        if not name.isascii() or not _latin1(val):
            msg = (
                f"request_headers: header {name!r} cannot travel in HTTP (names are ASCII, values Latin-1); "
                "percent-encode the value"
            )
            raise ConfigError(msg)
        headers[name] = val
    return headers


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """What one stream is sent with, resolved from the top level and ``streams.<name>``."""

    stream: str
    endpoint: str
    object_name: str | None
    method: str
    url: str | None
    content_type: str
    request_headers: dict[str, str]
    exclude_attributes: frozenset[str]
    batch_records: bool
    batch_size: int
    grouping_algorithm: str
    group_by: str | None
    sync_mode: str
    delete_action: str
    mirror_confirmations: int  # issue 22
    # issue 24
    target_object_name: str | None = None
    association_id: int | None = None
    allow_resubscribe: bool = False
    create_missing_fields: bool = False


def resolve(config: t.Mapping[str, t.Any], stream: str) -> StreamSettings:
    """The settings for ``stream``: its ``streams.<name>`` entry over the top-level values."""
    own = (config.get("streams") or {}).get(stream) or {}
    unknown = set(own) - set(STREAM_SETTING_NAMES)
    if unknown:
        msg = f"streams.{stream}: unknown setting(s) {', '.join(sorted(unknown))}"
        raise ConfigError(msg)

    def get(name: str) -> t.Any:  # noqa: ANN401
        if own.get(name) is not None:
            return own[name]
        return _setting(config, name)

    batch_size = int(get("batch_size"))
    if batch_size < 1:
        msg = f"stream '{stream}': batch_size must be at least 1"
        raise ConfigError(msg)
    grouping = get("grouping_algorithm")
    if grouping == "by_field" and not get("group_by"):
        msg = f"stream '{stream}': grouping_algorithm 'by_field' needs group_by"
        raise ConfigError(msg)
    return StreamSettings(
        stream=stream,
        endpoint=get("endpoint"),
        object_name=get("object_name"),
        method=str(get("method")).upper(),
        url=get("url"),
        content_type=get("content_type"),
        request_headers=parse_headers(get("request_headers")),
        exclude_attributes=frozenset(get("exclude_attributes") or ()),
        batch_records=bool(
            get("endpoint") in BATCHED_BY_DEFAULT if get("batch_records") is None else get("batch_records")
        ),
        batch_size=batch_size,
        grouping_algorithm=grouping,
        group_by=get("group_by"),
        sync_mode=get("sync_mode"),
        delete_action=get("delete_action"),
        target_object_name=get("target_object_name"),
        association_id=None if get("association_id") is None else int(get("association_id")),
        allow_resubscribe=bool(get("allow_resubscribe")),
        create_missing_fields=bool(get("create_missing_fields")),
        mirror_confirmations=_confirmations(stream, get("mirror_confirmations")),
    )


def _confirmations(stream: str, value: t.Any) -> int:  # noqa: ANN401
    """issue 22: at least one complete full table."""
    if not isinstance(value, int) or value < 1:
        msg = f"stream '{stream}': mirror_confirmations must be a whole number of at least 1"
        raise ConfigError(msg)
    return value


_AUTHORITY_PASSWORD = re.compile(r"^[A-Za-z][\w+.-]*://[^:/@?#]*:(?P<password>.*)@")  # greedy: to the last @
_QUERY_PASSWORD = re.compile(r"(?i)\bpassword=(?P<password>[^&#\s]*)")


def ledger_password(ledger_url: str | None) -> str | None:
    """The password in a ledger_url, as written (percent-encoded): in its authority
    (``postgresql://user:password@host/db``), else in a ``password=`` query parameter; None when it has none.
    A secret like the keys."""
    if not ledger_url:
        return None
    for pattern in (_AUTHORITY_PASSWORD, _QUERY_PASSWORD):
        found = pattern.search(ledger_url)
        if found and found["password"]:
            return found["password"]
    return None


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the whole run is sent with, built once from the config (defaults from the schema)."""

    api_url: str
    ingest_url: str
    api_key: str | None
    write_key: str | None
    dry_run: bool
    test_send: bool
    response_output: str
    response_stream_path: str | None
    dead_letter_path: str | None
    preview_path: str | None
    max_failures: int
    progress_interval: float
    max_retries: int
    retry_backoff: float
    request_timeout: float
    max_concurrency: int
    max_requests_per_second: float | None
    shutdown_grace_period: float
    ledger_url: str | None
    skip_unchanged: bool
    resync: bool
    retry_failed: bool
    max_delete_share: float
    lease_ttl: float  # issue 23
    lease_wait: float

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> RunSettings:
        def text(name: str) -> str | None:
            value = _setting(config, name)
            return None if value is None else str(value)

        rate = _setting(config, "max_requests_per_second")
        settings = cls(
            api_url=str(_setting(config, "api_url")).rstrip("/"),
            ingest_url=str(_setting(config, "ingest_url")).rstrip("/"),
            api_key=text("api_key"),
            write_key=text("write_key"),
            dry_run=bool(_setting(config, "dry_run")),
            test_send=bool(_setting(config, "test_send")),
            response_output=str(_setting(config, "response_output")),
            response_stream_path=text("response_stream_path"),
            dead_letter_path=text("dead_letter_path"),
            preview_path=text("preview_path"),
            max_failures=int(_setting(config, "max_failures")),
            progress_interval=float(_setting(config, "progress_interval")),
            max_retries=int(_setting(config, "max_retries")),
            retry_backoff=float(_setting(config, "retry_backoff")),
            request_timeout=float(_setting(config, "request_timeout")),
            max_concurrency=int(_setting(config, "max_concurrency")),
            max_requests_per_second=float(rate) if rate else None,
            shutdown_grace_period=max(0.0, float(_setting(config, "shutdown_grace_period"))),
            ledger_url=text("ledger_url"),
            skip_unchanged=bool(_setting(config, "skip_unchanged")),
            resync=bool(_setting(config, "resync")),
            retry_failed=bool(_setting(config, "retry_failed")),
            max_delete_share=float(_setting(config, "max_delete_share")),
            lease_ttl=float(_setting(config, "lease_ttl")),
            lease_wait=float(_setting(config, "lease_wait")),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Values out of range, refused at start-up in one line naming the setting (before anything is sent)."""
        problems = {
            "request_timeout": ("must be more than 0 seconds", self.request_timeout <= 0),
            "retry_backoff": ("must be 0 or more seconds", self.retry_backoff < 0),
            "max_retries": ("must be 0 or more", self.max_retries < 0),
            "max_concurrency": (
                f"must be between 1 and {MAX_CONCURRENCY}",
                not 1 <= self.max_concurrency <= MAX_CONCURRENCY,
            ),
            "dead_letter_path": (
                "cannot be stdout ('-'): under Meltano stdout is state; name a file",
                self.dead_letter_path == "-",
            ),
            "max_delete_share": ("must be between 0 and 1", not 0 <= self.max_delete_share <= 1),
            "lease_ttl": ("must be at least 1 second", not self.lease_ttl >= 1),
            "lease_wait": ("must be 0 or more seconds", not self.lease_wait >= 0),
        }
        for name, (problem, wrong) in problems.items():
            if wrong:
                msg = f"{name} {problem}"
                raise ConfigError(msg)
        for name, key in (("api_key", self.api_key), ("write_key", self.write_key)):
            if key is not None and len(key) < MIN_KEY_CHARS:
                msg = (
                    f"{name} is too short to be an Encharge key (fewer than {MIN_KEY_CHARS} characters; "
                    "its value is not shown: it is a secret)"
                )
                raise ConfigError(msg)

    @property
    def passwords(self) -> tuple[str, ...]:
        """The ledger's password (as written and percent-decoded): masked where it stands as a token, as it may
        be a common word (issue 23)."""
        password = ledger_password(self.ledger_url)
        return tuple(dict.fromkeys(k for k in (password, urllib.parse.unquote(password or "")) if k))

    @property
    def secrets(self) -> tuple[str, ...]:
        """The keys and the ledger's password, which no output may show."""
        password = ledger_password(self.ledger_url)
        return tuple(
            dict.fromkeys(
                k for k in (self.api_key, self.write_key, password, urllib.parse.unquote(password or "")) if k
            )
        )
