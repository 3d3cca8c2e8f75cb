"""The delivery scheduler: worker threads, per-key order, backpressure and the splitting of refused batches.

Requests that share an ordering key (the same person, the same object) are sent one after the other in the
order they were submitted; the others go out up to ``max_concurrency`` at a time. Which request waits on which
is the scheduler's bookkeeping, kept here, not in the requests.

A call that failed after its retries (5xx, 429, a timeout, a dropped connection) is held back until another call
goes through: when too many fail in a row, Encharge is unavailable and the run stops without failing their
records (they are sent again when the tap resumes from the last STATE written).
"""

from __future__ import annotations

import collections
import logging
import threading
import typing as t

from target_encharge.errors import EnchargeUnavailable
from target_encharge.request import Outcome, Request
from target_encharge.verdicts import Verdict

if t.TYPE_CHECKING:
    from target_encharge.client import Client

logger = logging.getLogger("target_encharge.delivery")
QUEUED_PER_WORKER = 4  # requests waiting per worker before submit blocks (bounded memory)


class OnResult(t.Protocol):
    def __call__(self, request: Request, outcome: Outcome, *, settle: bool = True) -> None: ...


class Delivery:
    """Runs requests on worker threads: same-key requests in submission order, others concurrently.

    ``on_result(request, outcome)`` is called once for each request that was sent. A batch that Encharge refused
    is reported as ``on_result(request, outcome, settle=False)`` (its records are not settled by it), then split, and
    each half is reported in turn while looking for the records at fault.
    """

    def __init__(self, client: Client, on_result: OnResult, concurrency: int, *, dry_run: bool = False) -> None:
        self.client, self.on_result, self.dry_run = client, on_result, dry_run
        self.concurrency = max(1, concurrency)
        self.max_queued = self.concurrency * QUEUED_PER_WORKER
        self.fatal: BaseException | None = None
        # one lock, three conditions: a worker is woken for each request made ready (not every worker for each,
        # which would take the interpreter lock from the reading thread eight times per call), a blocked submit
        # when there is room again, and wait() when nothing is left
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # workers: a request is ready, or the run closes
        self._room = threading.Condition(lock)  # submit: fewer than max_queued unfinished
        self._idle = threading.Condition(lock)  # wait(): nothing unfinished
        self._ready: collections.deque[Request] = collections.deque()
        self._tails: dict[str, Request] = {}  # the last request submitted for each key
        self._waiting_on: dict[Request, int] = {}  # how many earlier requests each one still waits for
        self._waiters: dict[Request, list[Request]] = {}  # who waits for each request
        self._unfinished = 0
        self._in_flight = 0
        self._failing: list[tuple[Request, Outcome]] = []  # calls in a row that failed after their retries, held
        self._closing = False
        self._threads: list[threading.Thread] = []

    def _start(self) -> None:
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"encharge-delivery-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def submit(self, request: Request) -> None:
        """Queue a request; blocks while too many are queued (bounded memory)."""
        self.raise_if_fatal()
        if self.dry_run:
            self.on_result(request, Outcome.not_sent())
            return
        if not self._threads:
            self._start()
        with self._cond:
            while self._unfinished >= self.max_queued and self.fatal is None:
                self._room.wait()
            self.raise_if_fatal()
            earlier = {self._tails[k] for k in request.keys if k in self._tails}
            for other in earlier:
                self._waiters.setdefault(other, []).append(request)
            for key in request.keys:
                self._tails[key] = request
            self._unfinished += 1
            if earlier:
                self._waiting_on[request] = len(earlier)
            else:
                self._ready.append(request)
                self._cond.notify()

    def holds(self, keys: t.Iterable[str]) -> bool:
        """Whether a request submitted earlier for any of ``keys`` is not answered yet (one submitted now goes
        after it)."""
        with self._cond:
            return any(key in self._tails for key in keys)

    @property
    def calls_in_flight(self) -> int:
        """Requests being sent right now (the others wait in the queue or in the outbox)."""
        with self._cond:
            return self._in_flight

    @property
    def unfinished(self) -> int:
        """Requests submitted and not yet answered (in flight, or queued behind others)."""
        with self._cond:
            return self._unfinished

    def wait(self) -> None:
        """Until every submitted request is finished (or the run has stopped); calls that failed after their
        retries and are still held back then fail for good (too few in a row to mean an outage)."""
        with self._cond:
            while self._unfinished and self.fatal is None:
                self._idle.wait(0.5)
        self.raise_if_fatal()
        self._release_failing()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.client.timeout + 1)
        self.client.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closing:
                    self._cond.wait()
                if self._closing and not self._ready:
                    return
                request = self._ready.popleft()
                self._in_flight += 1
            try:
                if self.fatal is None:
                    self._deliver(request)
            except BaseException as exc:  # noqa: BLE001 - any failure here must stop the run, not a thread
                self.fatal = exc
            finally:
                self._finish(request)

    def _deliver(self, request: Request) -> None:
        outcome = self.client.send(request)
        judged = request.verdict(outcome)
        if judged is Verdict.RETRY:  # retries used up: held until we know whether Encharge is down
            self._hold(request, outcome)
            return
        self._release_failing()
        if judged.refused and request.splittable:
            logger.info(
                "Encharge refused a batch of %d (%s); splitting it to find the records at fault",
                len(request.entries),
                outcome.error,
            )
            self.on_result(request, outcome, settle=False)
            for half in request.halves():
                self._deliver(half)
            return
        if judged is Verdict.EXISTS:  # its template says: a create of what exists is sent again as an update
            logger.info(
                "Encharge answered %s to the create of a record that exists: updating it instead", outcome.status
            )
            self.on_result(request, outcome, settle=False)
            for upsert in request.as_upserts():
                self._deliver(upsert)
            return
        self.on_result(request, outcome)

    def _hold(self, request: Request, outcome: Outcome) -> None:
        with self._cond:
            self._failing.append((request, outcome))
            in_a_row = len(self._failing)
        if self.client.retry.is_outage(in_a_row):
            with self._cond:
                failing, self._failing = self._failing, []
            for call, answer in failing:  # shown (responses, counts), never failed: the tap sends them again
                self.on_result(call, answer, settle=False)
            msg = (
                f"Encharge is unavailable: {in_a_row} calls in a row failed after "
                f"{self.client.retry.max_retries} retries each (last: {outcome.error}); stopped early, nothing "
                "was dead-lettered for it: run again later, the tap resumes from the last STATE written"
            )
            raise EnchargeUnavailable(msg)

    def _release_failing(self) -> None:
        """A call went through (or the input is done): the calls held back failed for good after all."""
        with self._cond:
            failing, self._failing = self._failing, []
        for request, outcome in failing:
            self.on_result(request, outcome)

    def _finish(self, request: Request) -> None:
        with self._cond:
            self._in_flight -= 1
            for key in request.keys:
                if self._tails.get(key) is request:
                    del self._tails[key]
            ready = 0
            for waiter in self._waiters.pop(request, ()):
                self._waiting_on[waiter] -= 1
                if self._waiting_on[waiter] == 0:
                    del self._waiting_on[waiter]
                    self._ready.append(waiter)
                    ready += 1
            self._unfinished -= 1
            if self.fatal is not None:  # the run stops: everyone waiting is told
                for condition in (self._cond, self._room, self._idle):
                    condition.notify_all()
                return
            self._cond.notify(ready)
            self._room.notify()
            if not self._unfinished:
                self._idle.notify_all()
