"""TargetEncharge: the settings schema, routing of streams to sinks, start-up checks and the run's ending."""

from __future__ import annotations

import contextlib
import logging
import sys
import typing as t

import click
from singer_sdk import Target
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.singerlib.exceptions import SingerReadError

from target_encharge.client import (
    Call,
    Client,
    Credentials,
    Delivery,
    RateLimiter,
    RedactingFilter,
    Redactor,
    RetryPolicy,
    check_url,
)
from target_encharge.errors import AuthError, ConfigError, EnchargeTargetError, InputError
from target_encharge.reader import Reader
from target_encharge.responses import Ledger, Progress, outputs_for, summary_title
from target_encharge.settings import SETTINGS_SCHEMA, from_environment, numbers_from_text, resolve
from target_encharge.sinks import STATE_FLUSH_AGE, Batch, EnchargeSink
from target_encharge.templates import join_url, template_for

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class TargetEncharge(Target):
    """Loads records from any Singer tap into Encharge."""

    name = "target-encharge"
    config_jsonschema = SETTINGS_SCHEMA
    default_sink_class = EnchargeSink
    message_reader_class = Reader
    running: t.ClassVar[TargetEncharge | None] = None  # the instance `invoke` made, to end it cleanly
    redact_errors: t.ClassVar[Redactor | None] = None  # masks the keys in the one-line reason to stop

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        if isinstance(kwargs.get("config"), dict):
            kwargs["config"] = numbers_from_text(kwargs["config"])
        super().__init__(*args, **kwargs)
        config = self.config
        # from here on, a reason to stop that quotes a setting (a URL, a header) never shows a key
        TargetEncharge.redact_errors = Redactor(str(config[k]) for k in ("api_key", "write_key") if config.get(k))
        self.dry_run = bool(config.get("dry_run"))
        self.api_url = str(config.get("api_url") or "https://api.encharge.io/v1").rstrip("/")
        self.ingest_url = str(config.get("ingest_url") or "https://ingest.encharge.io/v1").rstrip("/")
        check_url(self.api_url, "api_url")
        check_url(self.ingest_url, "ingest_url")
        for stream in ("*", *(config.get("streams") or {})):  # the top level and each stream must make sense
            template_for(resolve(config, stream), self.api_url, self.ingest_url)
        credentials = Credentials(self.api_url, self.ingest_url, config.get("api_key"), config.get("write_key"))
        concurrency = int(config.get("max_concurrency") or 4)
        client = Client(
            credentials,
            RetryPolicy(max_retries=int(config.get("max_retries", 5)),
                        backoff=float(config.get("retry_backoff", 0.5))),
            timeout=float(config.get("request_timeout") or 30),
            rate=RateLimiter(config.get("max_requests_per_second")),
            pool_size=concurrency,
        )
        self.redact = client.redact
        self._install_redaction()
        self.ledger = Ledger(outputs_for(config, self.redact), int(config.get("max_failures", 0)),
                             client_headers=lambda call: client.headers(call, mask=True))
        self.progress = Progress(self.ledger, float(config.get("progress_interval", 10)))
        self.delivery = Delivery(client, self.ledger.result, concurrency, dry_run=self.dry_run)
        self._holding: dict[str, Batch] = {}
        self._checked_key = False
        self._schemas: list[str] | None = None
        self._finished = False
        TargetEncharge.running = self

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """The SDK's settings, less those that mean nothing here (SQL load methods, the SDK's own batch size:
        ours is `batch_size`)."""
        super().append_builtin_config(config_jsonschema)
        for name in ("load_method", "batch_size_rows"):
            config_jsonschema["properties"].pop(name, None)

    @classproperty
    def _env_var_config(cls) -> dict[str, t.Any]:  # noqa: N805
        """``--config ENV`` reads TARGET_ENCHARGE_<SETTING> variables, typed as the settings schema says."""
        cls.append_builtin_config(cls.config_jsonschema)
        return from_environment(cls.config_jsonschema, cls._env_var_prefix)

    # routing and start-up checks

    def get_sink_class(self, stream_name: str) -> type[Sink]:  # noqa: ARG002
        return EnchargeSink

    def add_sink(self, stream_name: str, schema: dict, key_properties: t.Sequence[str] | None = None) -> Sink:
        sink = super().add_sink(stream_name, schema, key_properties)
        if isinstance(sink, EnchargeSink) and not self.dry_run:
            self._check_before_sending(sink)
        self.progress.start()
        return sink

    def _check_before_sending(self, sink: EnchargeSink) -> None:
        """What can be known before any record of this stream is sent: its key is there and accepted,
        and a custom object's schema exists."""
        stream, template = sink.stream_name, sink.template
        url = template.url({}) if template.fixed_url else join_url(self.api_url, sink.settings.url or "")
        credential = self.delivery.client.credentials.for_url(url)
        if credential and not credential[1]:
            need = "the Encharge Ingest write key" if credential[0] == "write_key" else "the Encharge REST API key"
            msg = f"stream '{stream}' ({template.name}) needs {credential[0]} ({need})"
            raise ConfigError(msg)
        if credential and credential[0] == "api_key" and not self._checked_key:
            self._get("/accounts/info")
            self._checked_key = True
        object_name = sink.settings.object_name
        if template.name == "create_custom_object" and object_name:
            if self._schemas is None:
                body = self._get("/schemas")
                self._schemas = [o.get("name") for o in (body or {}).get("objects", []) if isinstance(o, dict)]
            if object_name not in self._schemas:
                msg = (f"stream '{stream}': object_name {object_name!r} is not a custom object schema of this "
                       f"Encharge account (names are case-sensitive); the account has: "
                       f"{', '.join(map(repr, self._schemas)) or 'none'}")
                raise ConfigError(msg)

    def _get(self, path: str) -> t.Any:  # noqa: ANN401
        """A start-up GET on the REST API, with the same retries as any call."""
        call = Call("", "check", "GET", self.api_url + path, "", {}, None, [])
        outcome = self.delivery.client.send(call)
        if not outcome.ok:
            msg = (f"GET {path} failed after {outcome.attempts} attempt(s): {outcome.error}; "
                   f"is api_url ({self.api_url}) Encharge's REST API?")
            raise ConfigError(msg)
        return outcome.body

    # same-person ordering across open batches

    def hold(self, keys: t.Iterable[str], batch: Batch) -> None:
        for key in keys:
            self._holding[key] = batch

    def release(self, batch: Batch) -> None:
        for key in batch.keys:
            if self._holding.get(key) is batch:
                del self._holding[key]

    def flush_holding(self, keys: t.Iterable[str], joining: Batch | None) -> None:
        """A record for a person waiting in another open batch (another stream, URL or group) sends that batch
        first (input order); ``joining`` is the batch the record itself goes into, if one is open."""
        for key in keys:
            batch = self._holding.get(key)
            if batch is not None and batch is not joining:
                batch.sink.flush(batch)

    # state

    def _process_state_message(self, message_dict: dict) -> None:
        self._assert_line_requires(message_dict, requires={"value"})
        self.flush_open_batches(older_than=STATE_FLUSH_AGE)
        self.ledger.add_state(message_dict["value"])

    def _write_state_message(self, state: dict) -> None:
        """STATE goes out through the ledger, once what came before it is done; never here."""

    # the run's ending

    def flush_open_batches(self, older_than: float | None = None) -> None:
        """Send every stream's open batches (only those opened ``older_than`` seconds ago or more, if given)."""
        for sink in [*self._sinks_to_clear, *self._sinks_active.values()]:
            if isinstance(sink, EnchargeSink):
                sink.flush_all(older_than)

    def process_endofpipe(self) -> None:
        self.flush_open_batches()
        self.delivery.wait()
        super().process_endofpipe()
        self.finish()

    def finish(self) -> None:
        if not self._finished:  # once, whichever way the run ends
            self._finished = True
            self.delivery.close()
            self.progress.stop()
            self.ledger.final_state()
            if self.ledger.counts:
                self.logger.info("%s\n%s", summary_title(self.ledger, dry_run=self.dry_run), self.ledger.table())
        self.ledger.check_failures()

    def _install_redaction(self) -> None:
        redacting = RedactingFilter(self.redact)
        for log in (logging.getLogger(), self.logger):
            for handler in log.handlers:
                handler.addFilter(redacting)

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run; a reason to stop is told in one line on stderr and the exit code is 1."""
        try:
            try:
                super().invoke(*args, **kwargs)
            except UnicodeDecodeError:
                msg = "input is not UTF-8 text; nothing after the bad bytes was read"
                raise InputError(msg) from None
            except AuthError:
                raise  # every further call would be refused the same way
            except (EnchargeTargetError, FatalSyncError, SingerReadError):
                with contextlib.suppress(EnchargeTargetError, FatalSyncError):  # the first reason is the one told
                    cls._deliver_what_was_read()
                raise
        except (EnchargeTargetError, FatalSyncError, SingerReadError) as exc:
            _fail(str(exc))
        except ConfigValidationError as exc:
            _fail("invalid config: " + "; ".join(_masked(error) for error in exc.errors or [str(exc)]))

    @classmethod
    def _deliver_what_was_read(cls) -> None:
        """Bad input, too many failures or a stream that cannot be sent stop reading; the records read before
        are still delivered (and their STATE), never cut off mid-call."""
        target = cls.running
        if target is None:
            return
        target.flush_open_batches()
        target.delivery.wait()
        target.finish()


def _masked(error: str) -> str:
    """A config error about a key never quotes the key (the SDK's message starts with the value)."""
    for name, spec in SETTINGS_SCHEMA["properties"].items():
        if spec.get("secret") and f"config['{name}']" in error:
            return f"{name} must be a string (its value is not shown: it is a secret)"
    return error


def _fail(message: str) -> t.NoReturn:
    redact = TargetEncharge.redact_errors
    message = redact(message) if redact and message else message
    click.echo(f"target-encharge: error: {message.splitlines()[0] if message else 'failed'}", err=True)
    sys.exit(1)
