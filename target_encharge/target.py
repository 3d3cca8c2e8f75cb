"""TargetEncharge: wiring only. The settings schema, the sink class, the STATE hook and the run's ending;
everything else is the run's parts (run.py) and the SDK seams (sdk.py)."""

from __future__ import annotations

import contextlib
import sys
import typing as t

import click
from singer_sdk.exceptions import ConfigValidationError, FatalSyncError, MapExpressionError
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.singerlib.exceptions import SingerReadError
from singer_sdk.sinks import RecordSink
from typing_extensions import override

from target_encharge import early, redaction, report
from target_encharge.batches import records_of_batch
from target_encharge.config import from_environment, numbers_from_text, refusal
from target_encharge.errors import AuthError, EnchargeTargetError, InputError
from target_encharge.reader import Interrupted, Reader
from target_encharge.redaction import Redactor
from target_encharge.run import CONNECTION_CHECK_STREAM, Run
from target_encharge.sdk import SeamTarget
from target_encharge.settings import SETTINGS_SCHEMA, OperationsSettings, RunSettings, resolve, secret_setting
from target_encharge.sinks import EnchargeSink
from target_encharge.templates import template_for
from target_encharge.urls import require_safe_url

if t.TYPE_CHECKING:
    from singer_sdk.sinks import Sink

STOPS = (EnchargeTargetError, FatalSyncError, SingerReadError)  # reasons to stop, told in one line


class TargetEncharge(SeamTarget):
    """Loads records from any Singer tap into Encharge."""

    name = "target-encharge"
    config_jsonschema = SETTINGS_SCHEMA
    default_sink_class = EnchargeSink
    message_reader_class = Reader
    message_reader: Reader
    capabilities: t.ClassVar = [*SeamTarget.capabilities, PluginCapabilities.ACTIVATE_VERSION, PluginCapabilities.BATCH]
    stop_signal: int | None = None  # SIGTERM or SIGINT came: read no further line
    streams_seen: set[str]

    def __init__(self, *, config: t.Any = None, **kwargs: t.Any) -> None:  # noqa: ANN401
        self.streams_seen = set()
        super().__init__(config=numbers_from_text(config) if isinstance(config, dict) else config, **kwargs)
        settings = RunSettings.from_config(self.config)
        operations = OperationsSettings.from_config(self.config)
        self.redact = Redactor(settings.secrets + operations.secrets, words=settings.passwords)
        with _told_without_keys(self.redact):  # a reason to stop that quotes a setting never shows a key
            require_safe_url(settings.api_url, "api_url")
            require_safe_url(settings.ingest_url, "ingest_url")
            for stream in ("*", *(self.config.get("streams") or {})):  # the top level and each stream make sense
                template_for(resolve(self.config, stream), settings.api_url, settings.ingest_url)
            fingerprint = report.settings_fingerprint(self.config, secret_setting)
            self.run = Run.start(settings, self.logger, operations, fingerprint)
        self._uninstall_redaction = redaction.install(self.run.redact, self.logger)
        for signum in early.take():  # came while the command was starting: acted on now
            self.on_signal(signum)

    @override
    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """The SDK's settings, less those that mean nothing here (SQL load methods, the SDK's own batch size:
        ours is `batch_size`; `batch_config`, how a tap writes BATCH files: a BATCH message names its own)."""
        super().append_builtin_config(config_jsonschema)
        for name in ("load_method", "batch_size_rows", "batch_config"):
            config_jsonschema["properties"].pop(name, None)

    @override
    @classmethod
    def config_from_environment(cls, schema: dict, prefix: str) -> dict[str, t.Any]:
        """``--config ENV`` reads TARGET_ENCHARGE_<SETTING> variables, typed as the settings schema says."""
        return from_environment(schema, prefix)

    @override
    def get_sink_class(self, stream_name: str) -> type[Sink]:
        self.streams_seen.add(stream_name)
        return ConnectionCheckSink if stream_name == CONNECTION_CHECK_STREAM else EnchargeSink

    @override
    def on_state(self, state: dict) -> None:
        if self.run.settings.response_output == "state" and not isinstance(state, dict):
            msg = (
                f"input line {self.message_reader.line_number}: a STATE value that is not an object cannot carry "
                "the summary of response_output 'state'; nothing after it was read"
            )
            raise InputError(msg)
        self.run.on_state(state)

    @override
    def on_batch(self, message: dict) -> None:
        """A BATCH message: each record of its files handled exactly as a RECORD message would be."""
        stream = message.get("stream")
        for row in records_of_batch(message, self.message_reader.line_number):
            if self.stop_signal is not None:
                raise Interrupted(self.stop_signal)
            self.process_record_message({"type": "RECORD", "stream": stream, "record": row})

    @override
    def on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT: read no further line and finish what was read within shutdown_grace_period. Only
        flags are set here (no I/O, no lock); a wait for input or for delivery is interrupted by raising."""
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        run = getattr(self, "run", None)  # (None: the SDK's handler came before the run was built)
        if run is not None:
            run.stop_signal = signum  # a wait that looks (another run's lease) ends within its next nap
        self.message_reader.stop(signum)  # raises when blocked waiting for the next line
        if run is not None and run.waiting:
            raise Interrupted(signum)

    @override
    def process_endofpipe(self) -> None:
        """The normal end of input (never a signal, a fatal error or a kill): `mirror`'s snapshots complete
        here and its removals are sent, once every record is delivered."""
        self.run.deliver_all()
        super().process_endofpipe()
        if self.stop_signal is None:
            self.run.remove_what_left()
            self.run.deliver_all()
        self.finish()
        if self.stop_signal is None:  # (a signal still to be told: the run's ending says how it ended)
            self.run.conclude(0, None)  # also for a target driven by the SDK's own `listen`, as its tests do

    def finish(self, *, complete: bool = True) -> None:
        """The run's ending, once whichever way it ends (then stop if too many records failed); ``complete``
        False: it stopped before the end of its input."""
        try:
            if complete:
                self._warn_unmatched_streams()
            self.run.finish()
        finally:
            self._uninstall_redaction()

    def _warn_unmatched_streams(self) -> None:
        """Every `streams` key no stream of this run matched (a typo routes a stream to the default endpoint); only
        for a run that read its whole input (one stopped early may not have met its streams yet)."""
        if self.run.finished:
            return
        came = ", ".join(f"'{s}'" for s in sorted(self.streams_seen)) or "none"
        for name in sorted(set(self.config.get("streams") or {}) - self.streams_seen):
            self.logger.warning("streams.%s matched no stream of this run (streams that came: %s)", name, came)

    def deliver_what_was_read(self) -> None:
        """Bad input, too many failures, a signal or a stream that cannot be sent stop reading; the records read
        before are still delivered (and their STATE), never cut off mid-call; after a signal, within the grace
        period."""
        self.run.deliver_all(self.run.settings.shutdown_grace_period if self.stop_signal is not None else None)
        self.finish(complete=False)

    @override
    @classmethod
    def run_command(cls, config: dict, *, parse_env_config: bool, file_input: t.IO[str] | None) -> None:
        """Run; a reason to stop is told in one line on stderr and the exit code is 1 (128 + the signal's number
        after SIGTERM or SIGINT). Whichever way it ends, the run's history row and report say how."""
        target: TargetEncharge | None = None
        told: str | None = "ended by an unexpected error (please report it)"
        code, signalled = 1, False
        try:
            try:
                target = cls(config=config, validate_config=True, parse_env_config=parse_env_config)
                target.listen(file_input)
                if target.stop_signal is not None:  # came after the last line was read
                    raise Interrupted(target.stop_signal)
                code, told = 0, None
            except UnicodeDecodeError:
                msg = "input is not UTF-8 text; nothing after the bad bytes was read"
                raise InputError(msg) from None
            except AuthError:
                raise  # every further call would be refused the same way
            except STOPS:
                if target is not None:
                    with contextlib.suppress(*STOPS):  # the first reason is the one told
                        target.deliver_what_was_read()
                raise
            except Exception as exc:  # last resort: one line, and what was read before is delivered
                if target is None:
                    raise
                with contextlib.suppress(*STOPS):
                    target.deliver_what_was_read()
                raise InputError(target.unexpected(exc)) from exc
        except Interrupted as exc:
            code, told, signalled = 128 + exc.signum, str(exc), True
        except STOPS as exc:
            told = target.redact(str(exc)) if target is not None else str(exc)
        except ConfigValidationError as exc:
            told = refusal(exc.errors or [str(exc)])
        finally:
            if target is not None:
                target.finish_quietly()
                target.run.conclude(code, told.splitlines()[0] if told else None, signalled=signalled)
        if code:
            _fail(told or "failed", code=code)

    def unexpected(self, exc: BaseException) -> str:
        """One line for an exception nobody foresaw, naming the input line it came at."""
        line = self.message_reader.line_number
        if isinstance(exc, RecursionError):
            return f"input line {line} is nested too deeply to be handled; nothing after it was read"
        if isinstance(exc, MapExpressionError):
            return f"input line {line}: {self._map_failure(exc)}; nothing after it was read"
        text = self.redact(str(exc)).splitlines()[0] if str(exc) else ""
        return (
            f"input line {line}: unexpected {type(exc).__name__}{': ' + text if text else ''}; nothing after "
            "it was read (please report it)"
        )

    def _map_failure(self, exc: MapExpressionError) -> str:
        """Which stream map failed on which stream, and why (the SDK names only the expression)."""
        stream = self.message_reader.stream
        maps = (self.config.get("stream_maps") or {}).get(stream) or {}
        named = [f"'{name}' ({expr})" for name, expr in maps.items() if isinstance(expr, str) and expr in str(exc)]
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        return (
            f"stream_maps of stream '{stream}' failed on a record, at property {', '.join(named) or '?'}"
            f"{self.redact(str(cause)).splitlines()[0] if cause else ''}"
        )

    def finish_quietly(self) -> None:
        """Whatever happened, nothing of this run is left running or attached (threads, files, log filters)."""
        with contextlib.suppress(*STOPS):
            self.finish(complete=False)


class ConnectionCheckSink(RecordSink):
    """`meltano config test`'s stream (``meltano_test_stream``): a connection check. The start-up checks run
    (the API key is accepted); its records and its ACTIVATE_VERSION are neither sent nor written anywhere."""

    def __init__(self, target: TargetEncharge, stream_name: str, schema: dict, key_properties: t.Any) -> None:  # noqa: ANN401
        self.run = target.run
        super().__init__(target, stream_name, schema, key_properties)

    @override
    def setup(self) -> None:
        super().setup()
        settings = resolve(self.config, self.stream_name)
        self.run.open_stream(self.stream_name, self.run.template(settings), settings, ())

    @override
    def process_record(self, record: dict, context: dict) -> None:
        """Nothing: the test record is not a person."""

    @override
    def activate_version(self, new_version: int) -> None:
        """Nothing to remove: nothing was written."""


@contextlib.contextmanager
def _told_without_keys(redact: Redactor) -> t.Iterator[None]:
    """A reason to stop raised inside, with the keys masked in its message."""
    try:
        yield
    except EnchargeTargetError as exc:
        raise type(exc)(redact(str(exc))) from None


def _fail(message: str, code: int = 1) -> t.NoReturn:
    click.echo(f"target-encharge: error: {message.splitlines()[0] if message else 'failed'}", err=True)
    sys.exit(code)
