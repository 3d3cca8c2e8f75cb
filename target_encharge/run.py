"""One run's parts, built once from its settings and shared by the target and its sinks: the client and the
delivery scheduler, the outbox, the results (STATE gate, counts, outputs), the start-up checks, the progress
line, and the run's ending. A sink sees only the few methods of :class:`~target_encharge.sinks.SinkRun`."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import typing as t

from target_encharge import report
from target_encharge.casing import CaseMerges
from target_encharge.client import Client
from target_encharge.delivery import Delivery
from target_encharge.encharge_ids import Associations, EnchargeIds
from target_encharge.errors import EnchargeTargetError
from target_encharge.failures import FailureLimit
from target_encharge.fields import Consent, FieldContract
from target_encharge.ledger import SyncLedger
from target_encharge.ledger.runs import write_run
from target_encharge.lookups import Lookups
from target_encharge.outbox import STATE_FLUSH_AGE, Outbox
from target_encharge.outputs import Outputs
from target_encharge.preflight import Preflight
from target_encharge.progress import Progress, dead_letter_line, summary_title
from target_encharge.reader import Interrupted
from target_encharge.redaction import Redactor
from target_encharge.request import Outcome, Request
from target_encharge.results import Results
from target_encharge.settings import NOTIFY_TIMEOUT, OperationsSettings, RunSettings, StreamSettings
from target_encharge.sync import Planned, StreamSync, Sync, account_name
from target_encharge.templates import person_key, template_for
from target_encharge.verdicts import NOT_FOUND, Verdict

if t.TYPE_CHECKING:
    from target_encharge.outbox import Route
    from target_encharge.request import Entry
    from target_encharge.sync import Exists
    from target_encharge.templates import Template


def _digest(key: str) -> str:
    """A key's digest: what the ledger knows a key by (never the key)."""
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


AS_DELIVERED = Outcome(200, None, None, 1, 0.0)  # `baseline`: every request answered so, none sent
CONNECTION_CHECK_STREAM = "meltano_test_stream"  # `meltano config test`'s stream: checks the connection only
GRACE_POLL = 0.05  # seconds between looks at what is still undone during a shutdown's grace period


@dataclasses.dataclass
class Run:
    """Everything one run holds; nothing of it outlives the run (several runs may share a process)."""

    settings: RunSettings
    redact: Redactor
    client: Client
    delivery: Delivery
    results: Results
    outbox: Outbox
    preflight: Preflight
    progress: Progress
    logger: logging.Logger  # where the end-of-run summary goes
    finished: bool = False
    case_merges: CaseMerges = dataclasses.field(default_factory=CaseMerges)
    waiting: bool = False  # waiting in deliver_all for every call to be answered
    stop_signal: int | None = None  # SIGTERM or SIGINT came (set by the target's handler)
    sync: Sync | None = None  # the sync ledger (None only when the run could not open it)
    lookups: Lookups | None = None  # asks Encharge what exists (`update`, `create`; not in a dry run)
    refusals: list[str] = dataclasses.field(default_factory=list)  # mirror's guard: told at the end, exit 1
    associations: Associations | None = None  # association records: their Encharge ids, or waiting (issue 24)
    resubscribes: Consent = dataclasses.field(default_factory=Consent)  # `unsubscribed: false` left out (issue 24)
    mirrors: dict[str, tuple[Route, int]] = dataclasses.field(default_factory=dict)  # stream: route, confirmations
    _account: str | None = None
    _later_keys: set[str] = dataclasses.field(default_factory=set)  # persons and objects of requests held to the end
    # issue 25: the run's history row, its report, the failure-share alert, tags held for their person
    operations: OperationsSettings = dataclasses.field(default_factory=lambda: OperationsSettings.from_config({}))
    record: report.RunRecord = dataclasses.field(default_factory=lambda: report.RunRecord.begin(""))
    failures: report.FailureExamples = dataclasses.field(default_factory=report.FailureExamples)
    opened: set[str] = dataclasses.field(default_factory=set)  # streams opened (the connection check's among them)
    concluded: bool = False
    _history_written: bool = False

    @classmethod
    def start(
        cls,
        settings: RunSettings,
        logger: logging.Logger,
        operations: OperationsSettings | None = None,
        fingerprint: str = "",
    ) -> Run:
        client = Client.for_settings(settings, pool_size=settings.max_concurrency)
        outputs = Outputs.for_run(settings, client.redact)
        limit = FailureLimit(
            settings.max_failures, outputs.dead_letters.shown_path if outputs.dead_letters is not None else None
        )
        results = Results(outputs, limit, masked_headers=lambda request: client.headers(request, mask=True))
        operations = operations or OperationsSettings.from_config({})
        failures = report.FailureExamples()
        results.on_failure = failures.add
        baseline = operations.baseline and not (settings.dry_run or settings.test_send)
        delivery = Delivery(
            client,
            _as_delivered(results.on_result) if baseline else results.on_result,
            settings.max_concurrency,
            dry_run=settings.dry_run or baseline,
        )
        looking = settings.dry_run or settings.test_send  # reads the ledger, never writes it
        ledger = SyncLedger.open(settings.ledger_url, read_only=looking)
        ids = EnchargeIds(None if settings.dry_run else client, settings.api_url, ledger, writes=not looking)
        results.learn = ids.learn
        preflight = Preflight(client, settings.api_url)
        results.sync = Sync(
            ledger,
            skip_unchanged=settings.skip_unchanged,
            resync=settings.resync,
            writes=not looking,
            redact=client.redact.value,
        )
        run = cls(
            settings=settings,
            redact=client.redact,
            client=client,
            delivery=delivery,
            results=results,
            outbox=Outbox(delivery.submit, results.unsent),
            preflight=preflight,
            progress=Progress(
                results.counts, results.gate, settings.progress_interval, lambda: delivery.calls_in_flight
            ),
            logger=logger,
            sync=results.sync,
            lookups=None if settings.dry_run else Lookups(client, settings.api_url),
            associations=Associations(
                ids, None if settings.dry_run else preflight.schema_list, dry_run=settings.dry_run
            ),
            operations=operations,
            record=report.RunRecord.begin(fingerprint),
            failures=failures,
        )
        run.outbox.submit = run._submit  # tags whose person is not known yet wait for the end of the run
        if baseline:
            logger.info("baseline: records are written to the sync ledger as delivered; nothing is sent")
        return run

    # what a sink asks of its run (sinks.SinkRun)

    def template(self, settings: StreamSettings) -> Template:
        """The template a stream's settings route it to, at this run's REST API and Ingest URLs."""
        template = template_for(settings, self.settings.api_url, self.settings.ingest_url)
        if template.associates is not None and template.removal is not None and self.associations is not None:
            template = dataclasses.replace(template, removal=self.associations.removal(template))
        return template

    def open_stream(
        self, stream: str, template: Template, settings: StreamSettings, key_properties: t.Sequence[str]
    ) -> StreamSync | None:
        """Before a stream's first record: its key is there and accepted and its custom object schema exists
        (not in a dry run, which sends nothing); its sync in the ledger."""
        self.opened.add(stream)
        if not self.settings.dry_run:
            self.preflight.before_sending(stream, template, settings)
        if stream == CONNECTION_CHECK_STREAM:  # `meltano config test`: checked; nothing of it is sent or written
            self.logger.info("Stream '%s': the connection is checked; its records are not sent", stream)
            return None
        self._history_started()
        sync = self.stream_sync(stream, template, settings, key_properties)
        if self.associations is not None and template.kind in ("person", "custom object", "association"):
            self.associations.ids.account = self.account(template)  # (its REST account)
        if sync is not None and (warning := sync.opened()):
            self.logger.warning("%s", warning)
        self.progress.start()
        return sync

    def field_contract(
        self, stream: str, template: Template, settings: StreamSettings, schema: dict
    ) -> FieldContract | None:
        """The stream's fields against the account's (not in a dry run, which asks nothing)."""
        if self.settings.dry_run:
            return None
        return self.preflight.field_contract(
            stream, template, schema, create=settings.create_missing_fields, exclude=settings.exclude_attributes
        )

    def consent(self) -> Consent:
        """What person upserts leave out so that nobody who opted out is subscribed again, counted for the run."""
        return self.resubscribes

    @property
    def retry_failed(self) -> bool:
        """Records that failed in earlier runs are sent again before a stream's own."""
        return self.settings.retry_failed

    def admit(self, stream: str) -> bool:
        """Whether a record of ``stream`` is to be handled (the run has not stopped; a test send: its first)."""
        self.delivery.raise_if_fatal()
        return self.results.admit(stream)

    def entry(self, route: Route, record: dict, *, again: bool = False) -> Entry:
        """A record of ``route``'s stream, numbered and counted (``again``: one that failed in an earlier run)."""
        template = route.template
        entry = self.results.entry(route.stream, record, template.identifiers(record))
        if again:
            self.results.sent_again(route.stream)
        elif template.people:
            self.case_merges.saw(entry.ids.get("email"))
        return entry

    def refuse(self, entry: Entry, problem: str) -> None:
        """A record that cannot be sent (``problem``: why): failed for good."""
        self.results.refuse(entry, problem)

    def send(self, route: Route, entry: Entry) -> None:
        """A record to Encharge, through the outbox (at once, or in its route's batch); an association waits
        until its sides' Encharge ids are known."""
        if route.template.associates is not None and self.associations is not None:
            url = self.associations.url(route, entry)
            if url is not None:
                self.outbox.add(route, entry, url)
            return
        self.outbox.add(route, entry, route.template.url(entry.record))

    def _submit(self, request: Request) -> None:
        """A request from the outbox to delivery; a tag (or anything whose 404 means "its person is not there
        yet") for a person neither the ledger nor this run knows waits for the end of the run, uncalled."""
        template = request.template
        if (
            self._later_keys
            and not self.waiting
            and (template is None or template.kind != "person")  # (a person: what the waiting ones wait for)
            and self._later_keys.intersection(request.keys)
        ):
            self.results.later.append(request)  # after a waiting one for the same person: in input order
            return
        if (
            template is not None
            and request.answers.get(NOT_FOUND) is Verdict.LATER
            and self.sync is not None
            and not self.settings.dry_run  # (a dry run calls nothing: its previews stay in input order)
            and not self.waiting
            and not self.delivery.holds(request.keys)  # its person's upsert is on its way: it goes after it
            and not any(self._knows(template, e.ids) for e in request.entries)
        ):
            self.results.later.append(request)
            self._later_keys.update(request.keys)
            return
        self.delivery.submit(request)

    def _knows(self, template: Template, ids: dict) -> bool:
        """Whether the person ``ids`` name is known to exist: delivered (by this run or an earlier one) as the
        ledger says."""
        key = person_key(ids)
        if key is None:
            return True  # refused for it before sending, never here
        return self.sync is not None and self.sync.ledger.knows_person(self.account(template), key)

    # the sync ledger

    def account(self, template: Template) -> str:
        """The ledger's name for the Encharge account a stream's records go to: for the REST API, the account's
        id from `GET /accounts/info` at the REST host (a dry run, which calls nothing, finds it through the key's
        digest in the ledger); for Ingest, the write key's digest at the Ingest host; elsewhere, the host."""
        settings, sync = self.settings, self.sync
        url = template.url({}) if template.fixed_url else settings.api_url
        credential = self.client.credentials.for_url(url)
        if credential is None or not credential.key:
            return account_name("no key", url)
        if credential.setting == "write_key":
            return account_name(f"write key {_digest(credential.key)}", settings.ingest_url)
        if self._account is None:
            digest = _digest(credential.key)
            if settings.dry_run:
                known = sync.ledger.account_for(digest) if sync is not None else None
                self._account = known or account_name(f"api key {digest}", settings.api_url)
            else:
                info = self.preflight.account()
                self._account = account_name(
                    info.get("accountId") if isinstance(info, dict) else None, settings.api_url
                )
                if sync is not None and sync.writes:
                    sync.ledger.remember_account(digest, self._account)
        return self._account

    def stream_sync(
        self, stream: str, template: Template, settings: StreamSettings, key_properties: t.Sequence[str]
    ) -> StreamSync | None:
        """The sync of one stream, in this run's account."""
        if self.sync is None:
            return None
        sync = self.sync.stream(
            stream,
            template,
            key_properties,
            self.account(template),
            mode=settings.sync_mode,
            delete_action=settings.delete_action,
            exists=self._exists(template, settings),
        )
        if self.sync.writes:  # one run at a time per scope (dry runs and test sends only read)
            self.sync.ledger.take_lease(
                sync.scope, ttl=self.settings.lease_ttl, wait=self.settings.lease_wait, between=self.stop_if_signalled
            )
        return sync

    def stop_if_signalled(self) -> None:
        """:class:`~target_encharge.reader.Interrupted` once a signal came: a wait that looks here between its
        naps (another run's lease) ends within one, wherever the signal found the process."""
        if self.stop_signal is not None:
            raise Interrupted(self.stop_signal)

    def _exists(self, template: Template, settings: StreamSettings) -> Exists | None:
        """How the stream's sync asks Encharge what exists (`update`, `create`); a record too long to be asked
        about fails alone, with its reason (None in the answers: settled here)."""
        lookups = self.lookups
        if lookups is None or settings.sync_mode not in ("update", "create") or template.lookup is None:
            return None

        def exist(entries: t.Sequence[Entry]) -> list[bool | None]:
            answers: list[bool | None] = []
            for entry, found in zip(entries, lookups.exist(template, entries), strict=True):
                if isinstance(found, str):
                    self.results.refuse(entry, found)
                answers.append(None if isinstance(found, str) else found)
            return answers

        return exist

    def removed_at_source(self, route: Route, sync: StreamSync | None, record: dict, mode: str) -> None:
        """A record the tap marks deleted (`_sdc_deleted_at`): `mirror` plans the removal of what it wrote for it
        (durable at once, sent at the end of the run, within the guard); other modes never upsert it back
        (skipped, counted)."""
        if sync is None or mode != "mirror" or not sync.deleted(record):
            self.results.deleted_kept(route.stream)

    def watch(self, route: Route, settings: StreamSettings) -> None:
        """A `mirror` stream's route (a new one after each SCHEMA): its removals go through it at the end."""
        self.mirrors[route.stream] = (route, settings.mirror_confirmations)

    def mirror(self, sync: StreamSync, version: t.Any) -> None:  # noqa: ANN401
        """The tap's ACTIVATE_VERSION for a `mirror` stream: a snapshot starts, or (after its records) the tap
        says it is complete. Nothing is removed here: removals are decided at the end of a normal run."""
        sync.activated(version)

    def remove_what_left(self) -> None:
        """The input ended normally: every mirrored stream's open snapshots complete, then what left the source
        (and what `_sdc_deleted_at` planned) is removed, stream by stream, unless the guard refuses a stream's
        (then none of its removals is sent, and the run ends with exit 1 after delivering the rest)."""
        if self.sync is None:
            return
        streams = self.sync.mirrored()
        for sync in streams:
            sync.end_of_input()
        for sync in streams:
            if sync.scope.stream not in self.mirrors:
                continue
            route, confirmations = self.mirrors[sync.scope.stream]
            decided = sync.removals(
                self.settings.max_delete_share, confirmations, retry_failed=self.settings.retry_failed
            )
            stream = sync.scope.stream
            if decided.released:
                self.logger.info(
                    "Stream '%s': %d record(s) gone from the stream are still held by another stream or key of "
                    "the destination: released, not removed",
                    stream,
                    decided.released,
                )
            for identity, why in decided.waiting:
                self.logger.info("Stream '%s': %s waits for a confirmation: %s", stream, identity, why)
            if decided.refusal is not None:
                self.logger.error("%s", decided.refusal)
                self.refusals.append(decided.refusal)
                continue
            if decided.plans:
                self.logger.info(
                    "Stream '%s': %s %d record(s) that left the source (%s)",
                    stream,
                    "would remove" if self.settings.dry_run else "removing",
                    len(decided.plans),
                    sync.delete_action,
                )
            for plan in decided.plans:
                if self.settings.dry_run:
                    shown = ", ".join(f"{name} {value}" for name, value in plan.ids.items())
                    self.logger.info("Stream '%s': would remove %s: %s", stream, shown, plan.why)
                self._remove(route, sync, plan)

    def _remove(self, route: Route, sync: StreamSync, plan: Planned) -> None:
        entry = self.results.entry(route.stream, plan.ids, plan.ids, counted=False)
        sync.removing(entry.seq, plan)
        keys = route.template.ordering_keys(plan.ids, plan.removal.url)
        self.outbox.flush_holding_of(keys)  # what is waiting for that person goes first, in input order
        self.delivery.submit(
            Request(
                stream=route.stream,
                endpoint=route.template.name,
                method=plan.removal.method,
                url=plan.removal.url,
                content_type="application/json",
                headers=route.headers,
                body=plan.removal.body,
                entries=(entry,),
                keys=keys,
                removal=True,
                note=plan.why,
                answers=route.template.removal_answers,
            )
        )

    def on_state(self, state: dict) -> None:
        """A STATE from the tap: batches open a while go first, and the STATE waits for what came before it."""
        self.outbox.flush_all(older_than=STATE_FLUSH_AGE)
        if self.sync is not None:
            self.sync.flush()  # mirror: what came before this STATE is stamped before it can go out
        self.results.add_state(state)

    def deliver_all(self, grace: float | None = None) -> None:
        """Send every open batch and wait until each request is answered (or the run has stopped); with
        ``grace`` (a signal came), for at most that many seconds: what is not done by then keeps its STATE
        back, so the tap sends it again."""
        self.outbox.flush_all()
        if grace is None:
            self.waiting = True  # a signal now interrupts the wait (see TargetEncharge.on_signal)
            try:
                self.delivery.wait()
                self._send_waiting_associations()
                later = self.results.take_later()  # tags whose person was not there: every stream is in now
                if later:
                    self.logger.info("Tagging again %d request(s) whose person did not exist yet", len(later))
                    for request in later:
                        self.delivery.submit(request)
                    self.delivery.wait()
            finally:
                self.waiting = False
            return
        # the grace period is for the calls in flight (and queued behind them) only: records that wait for a later
        # pass (results.later, calls held back after their retries) do not hold the shutdown
        deadline = time.monotonic() + grace
        while self.delivery.unfinished and self.results.gate.pending and time.monotonic() < deadline:
            self.delivery.raise_if_fatal()
            time.sleep(GRACE_POLL)
        pending = self.results.gate.pending
        if not pending:
            return
        if self.delivery.unfinished:
            self.logger.warning(
                "%d record(s) not done within shutdown_grace_period (%g s): the tap's STATE after "
                "them was held back, so they are sent again next run",
                pending,
                grace,
            )
        else:
            self.logger.warning(
                "%d record(s) waiting for a later pass (such as tags whose person did not exist yet) were not "
                "sent again, as the run was stopped: the tap's STATE after them was held back, so they are sent "
                "again next run",
                pending,
            )

    def _send_waiting_associations(self) -> None:
        """Associations whose person or object was not known: now that every stream was answered, their ids are
        looked up (several per call) and they are sent; one whose side Encharge does not have fails, and is sent
        again next run."""
        waiting = self.associations.take_waiting() if self.associations is not None else []
        if not waiting:
            return
        self.logger.info("Sending %d association(s) that waited for their person or object", len(waiting))
        for route, entry, url in waiting:
            if url is None:
                self.results.not_there(entry, "Encharge has no such person or object (yet): sent again next run")
            else:
                self.outbox.add(route, entry, url)
        self.outbox.flush_all()
        self.delivery.wait()

    def finish(self) -> None:
        """The run's ending (once, whichever way it ends): workers stopped, the final STATE, the summary; then
        stop if too many records failed."""
        if not self.finished:
            self.finished = True
            self.delivery.close()
            self.progress.stop()
            for warning in (self.case_merges.warning(), self.resubscribes.warning()):
                if warning:
                    self.logger.warning("%s", warning)
            self.results.final_state()
            self.results.failure_log.close()
            counts = self.results.counts
            if counts:
                title = summary_title(counts, dry_run=self.settings.dry_run, test_send=self.settings.test_send)
                self.logger.info("%s\n%s", title, counts.table())
            where = dead_letter_line(self.results.out.dead_letters)
            if where:
                self.logger.info("%s", where)
            self._tell_waiting()
            self.results.out.close()
            if self.associations is not None:
                self._write_ids()
        self.results.enforce_failure_limit()
        if self.refusals:
            raise EnchargeTargetError(self.refusals[0])
        self._check_failure_share()

    def _check_failure_share(self) -> None:
        """`max_failure_share`: the first stream past it ends the run with exit 1 (what could be was delivered)."""
        share = self.operations.max_failure_share
        if share is None:
            return
        for stream, counts in sorted(self.results.counts.streams.items()):
            if counts.records and counts.failed > share * counts.records:
                msg = (
                    f"stream '{stream}': {counts.failed:,} of {counts.records:,} records failed "
                    f"({counts.failed / counts.records:.0%}), more than max_failure_share={share:g} allows "
                    "(the others were delivered and their STATE emitted; see the dead-letter file)"
                )
                raise EnchargeTargetError(msg)

    # issue 25: the run's history row and its report

    @property
    def _connection_check_only(self) -> bool:
        return bool(self.opened) and self.opened <= {CONNECTION_CHECK_STREAM}

    def _history_started(self) -> None:
        """The history row, status `running`, before the run's first stream is handled (not in a dry run)."""
        if self._history_written or self.sync is None or not self.sync.writes:
            return
        self._history_written = True
        write_run(self.sync.ledger, self.record.as_dict())

    def conclude(self, exit_code: int, reason: str | None, *, signalled: bool = False) -> None:
        """The run ended (once): its history row completed, its report written and sent, the ledger closed.
        A report or a notification that fails is logged, never fails the run."""
        if self.concluded:
            return
        self.concluded = True
        try:
            if self._connection_check_only:
                return  # `meltano config test`: nothing is written
            self.record.end(self.results.counts, exit_code=exit_code, reason=reason, signalled=signalled)
            if self.sync is not None and self.sync.writes:
                try:
                    write_run(self.sync.ledger, self.record.as_dict())
                except EnchargeTargetError as exc:
                    self.logger.warning("The run could not be written to the run history: %s", exc)
            self._report(exit_code)
        finally:
            if self.sync is not None:
                self.sync.close()

    def _report(self, exit_code: int) -> None:
        operations = self.operations
        if not operations.report_path and not operations.notify_url:
            return
        document = report.report(self.record, self.failures)
        if operations.report_path:
            report.write(operations.report_path, document)
        if operations.notify_url and (operations.notify_on == "always" or exit_code != 0):
            timeout = min(NOTIFY_TIMEOUT, self.settings.request_timeout)
            report.notify(operations.notify_url, operations.notify_secret, document, timeout)

    def _write_ids(self) -> None:
        """The Encharge ids learnt in this run, into the ledger (a failure to is told, never raised here)."""
        try:
            self.associations.ids.write()  # type: ignore[union-attr]
        except EnchargeTargetError as exc:
            self.logger.warning("The Encharge ids learnt in this run were not kept: %s", exc)

    def _tell_waiting(self) -> None:
        """How many failed records wait in the ledger to be sent again when their stream next comes."""
        if self.sync is None or not self.sync.streams:
            return
        try:
            waiting = sum(len(s.waiting()) for s in self.sync.streams.values())
        except EnchargeTargetError:  # the ledger went away: the run's own reason to stop is told
            return
        if waiting:
            self.logger.info(
                "%d failed record(s) wait in the sync ledger, to be sent again when their stream next comes", waiting
            )


def _as_delivered(on_result: t.Callable[..., None]) -> t.Callable[..., None]:
    """`baseline`: each request settled as if Encharge had answered 2xx, none sent."""

    def settle(request: Request, _outcome: Outcome, *, settle: bool = True) -> None:
        on_result(request, AS_DELIVERED, settle=settle)

    return settle
