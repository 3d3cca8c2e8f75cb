"""One run's parts, built once from its settings and shared by the target and its sinks: the client and the
delivery scheduler, the outbox, the results (STATE gate, counts, outputs), the start-up checks, the progress
line, and the run's ending."""

from __future__ import annotations

import dataclasses
import logging
import time

from target_encharge.casing import CaseMerges
from target_encharge.checks import StartupChecks
from target_encharge.client import Client, RateLimiter
from target_encharge.delivery import Delivery
from target_encharge.outbox import STATE_FLUSH_AGE, Outbox
from target_encharge.outputs import FailureLimit, Outputs, Progress, dead_letter_line, summary_title
from target_encharge.redaction import Redactor
from target_encharge.results import Results
from target_encharge.retry import RetryPolicy
from target_encharge.settings import RunSettings
from target_encharge.urls import Credentials

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
    checks: StartupChecks
    progress: Progress
    logger: logging.Logger  # where the end-of-run summary goes
    finished: bool = False
    case_merges: CaseMerges = dataclasses.field(default_factory=CaseMerges)
    waiting: bool = False  # waiting in deliver_all for every call to be answered

    @classmethod
    def start(cls, settings: RunSettings, logger: logging.Logger) -> Run:
        credentials = Credentials(settings.api_url, settings.ingest_url, settings.api_key, settings.write_key)
        client = Client(
            credentials,
            RetryPolicy(max_retries=settings.max_retries, backoff=settings.retry_backoff),
            timeout=settings.request_timeout,
            rate=RateLimiter(settings.max_requests_per_second),
            pool_size=settings.max_concurrency,
        )
        outputs = Outputs.for_run(settings, client.redact)
        limit = FailureLimit(settings.max_failures,
                             outputs.dead_letters.shown_path if outputs.dead_letters is not None else None)
        results = Results(outputs, limit, masked_headers=lambda request: client.headers(request, mask=True))
        delivery = Delivery(client, results.on_result, settings.max_concurrency, dry_run=settings.dry_run)
        return cls(
            settings=settings,
            redact=client.redact,
            client=client,
            delivery=delivery,
            results=results,
            outbox=Outbox(delivery.submit),
            checks=StartupChecks(client, settings.api_url),
            progress=Progress(results.counts, results.gate, settings.progress_interval,
                              lambda: delivery.calls_in_flight),
            logger=logger,
        )

    def on_state(self, state: dict) -> None:
        """A STATE from the tap: batches open a while go first, and the STATE waits for what came before it."""
        self.outbox.flush_all(older_than=STATE_FLUSH_AGE)
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
            finally:
                self.waiting = False
            return
        deadline = time.monotonic() + grace
        while self.results.gate.pending and time.monotonic() < deadline:
            self.delivery.raise_if_fatal()
            time.sleep(GRACE_POLL)
        if self.results.gate.pending:
            self.logger.warning("%d record(s) not done within shutdown_grace_period (%g s): the tap's STATE after "
                                "them was held back, so they are sent again next run", self.results.gate.pending,
                                grace)

    def finish(self) -> None:
        """The run's ending (once, whichever way it ends): workers stopped, the final STATE, the summary; then
        stop if too many records failed."""
        if not self.finished:
            self.finished = True
            self.delivery.close()
            self.progress.stop()
            if warning := self.case_merges.warning():
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
            self.results.out.close()
        self.results.check_failures()
