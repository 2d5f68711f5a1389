"""Delivery workers: claim due deliveries, hand them to their integrations' adapters, record it.

One dispatcher owns the database side and works in rounds (`rounds.run`, one transaction in its
own thread): record every outcome that came in since the last round, renew the leases that need
it, and claim more for integrations whose lane runs low. Deliveries run as tasks, at most
`workers` at once and at most an integration's `concurrency` each, so one slow package never
holds every worker. A finished delivery wakes the dispatcher when its lane runs low while more
may be due, else its outcome waits for the next round, `OUTCOME_DELAY` at most (`_round_due`);
the rules stage wakes it whenever it queues a document (`wake`, which may be set from its
thread). Rounds begin `ROUND_GAP` apart at least, so documents queued close together share
one. The integrations are read again once a poll interval has passed since a round last read
them, not by every round: a change to one reaches the runner within that interval. Adapters
are cached per integration, so connections are reused between documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError

from gateway import metrics
from gateway.config import DeliverySettings
from gateway.crashpoint import crashpoint
from gateway.outbound import attempts, rounds
from gateway.outbound.base import (
    Adapter,
    DeliveryError,
    PermanentError,
    RejectedError,
    TransientError,
)
from gateway.outbound.kinds import make_adapter
from gateway.outbound.rounds import Job, Outcome, Round
from gateway.store.db import Store

log = structlog.get_logger(__name__)

# Longest a finished delivery's outcome waits for a round to record it while rounds are being
# batched: until it is recorded a crash leaves the delivery uncertain (checked or resent).
# Well above `ROUND_GAP`, so that the round claiming the next document records it.
OUTCOME_DELAY = 0.1
# Shortest time from the start of one round to the start of the next. Documents queued within
# it share one round (one claim, one commit) instead of taking a round each, as arrivals share
# the SMTP door's group commit; a document waits this long for its claim at most. A round
# costs a transaction whatever it holds: with documents queued one by one at 200/s, 20 ms
# made a round for every two documents and 40 ms one for every four or five, with a third
# less of the runner's CPU per document.
ROUND_GAP = 0.04


class Wake(asyncio.Event):
    """An event that any thread may set.

    The rules stage queues documents in a worker thread and sets this there; a plain
    `asyncio.Event` set off the loop's thread does not wake a loop asleep in `select`, so the
    workers would only notice at their next poll.
    """

    def __init__(self) -> None:
        super().__init__()
        self._home: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._home = loop

    def set(self) -> None:
        home = self._home
        if home is None or _running_loop() is home:
            super().set()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            home.call_soon_threadsafe(super().set)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class DeliveryRunner:
    def __init__(self, store: Store, settings: DeliverySettings) -> None:
        self.store = store
        self.settings = settings
        self.wake = Wake()
        self._adapters: dict[int, tuple[dict[str, Any], Adapter]] = {}
        self._backlog: dict[int, deque[Job]] = {}
        self._limits: dict[int, int] = {}
        self._running: Counter[int] = Counter()
        self._tasks: dict[asyncio.Task[None], Job] = {}
        self._handing_over: set[int] = set()
        # Integrations whose last claim found nothing more due.
        self._dry: set[int] = set()
        self._interrupted: list[Job] = []
        self._outcomes: list[Outcome] = []
        # Every claim not yet recorded (waiting, running or finished), by delivery id, with
        # when its lease was last renewed.
        self._held: dict[int, tuple[attempts.Claim, float]] = {}
        self._turn = 0
        self._stopping = False
        self._db: ThreadPoolExecutor | None = None
        self._record_timer: asyncio.TimerHandle | None = None
        self._round_at = 0.0
        self._targets: Mapping[int, rounds.Target] | None = None
        self._targets_at = 0.0

    async def run(self) -> None:
        """Deliver until cancelled; then give back what was claimed and record what finished."""
        self.wake.bind(asyncio.get_running_loop())
        # Its own thread: in the shared default executor a round would queue behind the
        # rules stage's work.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-db")
        try:
            while True:
                self.wake.clear()
                await self._round()
                self._start_jobs()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races its timeout, and the runner would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._pause()):
                        await self.wake.wait()
                await self._gap()
        finally:
            await self._stop()

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.close()
        self._adapters.clear()

    def _pause(self) -> float:
        """Longest wait between rounds: the poll, and often enough to renew leases in time."""
        return min(self.settings.poll_interval, self.settings.lease / 3)

    async def _gap(self) -> None:
        """Wait out what is left of `ROUND_GAP` since the last round began."""
        rest = self._round_at + ROUND_GAP - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)

    async def _round(self) -> None:
        self._round_at = time.monotonic()
        if self._record_timer is not None:
            self._record_timer.cancel()
            self._record_timer = None
        work = Round(
            outcomes=self._outcomes,
            renew=self._due_renewals(),
            held=self._held_per_integration(self._outcomes),
            targets=self._known_targets(),
        )
        self._outcomes = []
        try:
            result = await self._in_thread(work)
        except OperationalError:
            # A database busy past its timeout: nothing was written, try it all again.
            log.exception("delivery_round_failed", outcomes=len(work.outcomes))
            self._outcomes = work.outcomes + self._outcomes
            for claim in work.renew:  # due again next round
                if claim.delivery_id in self._held:
                    self._held[claim.delivery_id] = (claim, 0.0)
            await asyncio.sleep(self._pause())
            self.wake.set()  # the outcomes put back are recorded right after the pause
            return
        self._apply(work, result)

    async def _in_thread(self, work: Round) -> rounds.Result:
        """Run `work` in the database thread. A commit cannot be stopped halfway, so a
        cancellation waits for it and applies its result: its claims are then given back."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._db, rounds.run, self.store, self.settings, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            try:
                self._apply(work, await future)
            except OperationalError:
                self._outcomes = work.outcomes + self._outcomes
            raise

    def _known_targets(self) -> Mapping[int, rounds.Target] | None:
        """The integrations the last rounds went by, or None when it is time to read them."""
        if time.monotonic() - self._targets_at >= self.settings.poll_interval:
            return None
        return self._targets

    def _apply(self, work: Round, result: rounds.Result) -> None:
        if work.targets is None:
            self._targets, self._targets_at = result.targets, time.monotonic()
        for outcome, owned in zip(work.outcomes, result.owned, strict=True):
            self._held.pop(outcome.claim.delivery_id, None)
            _log_outcome(outcome, owned)
        for claim in result.lost:
            log.warning("lease_lost", delivery=claim.delivery_id, attempt=claim.attempt_id)
        self._dry = (self._dry - result.asked) | result.dry
        now = time.monotonic()
        for job in result.jobs:
            self._held[job.claim.delivery_id] = (job.claim, now)
            self._limits[job.target.id] = job.target.limit
            self._backlog.setdefault(job.target.id, deque()).append(job)

    def _due_renewals(self) -> list[attempts.Claim]:
        """Leases renewed a third of a lease ago, so nobody takes a live attempt over."""
        now = time.monotonic()
        due = [c for c, at in self._held.values() if now - at >= self.settings.lease / 3]
        for claim in due:
            self._held[claim.delivery_id] = (claim, now)
        return due

    def _held_per_integration(self, recording: list[Outcome]) -> Counter[int]:
        """Claims per integration still held once the round has recorded `recording`: their
        slots are free again in the same transaction that claims more."""
        held = Counter(claim.integration_id for claim, _ in self._held.values())
        held.subtract(outcome.claim.integration_id for outcome in recording)
        return held

    def _start_jobs(self) -> None:
        """Start waiting jobs within the limits, one integration after the other in turn."""
        if self._stopping:
            return
        lanes = [iid for iid, backlog in self._backlog.items() if backlog]
        started = True
        while started and lanes:
            started = False
            self._turn += 1
            for index in range(len(lanes)):
                iid = lanes[(self._turn + index) % len(lanes)]
                if len(self._tasks) >= self.settings.workers:
                    return
                backlog = self._backlog[iid]
                if backlog and self._running[iid] < self._limits.get(iid, 1):
                    self._start(backlog.popleft())
                    started = True

    def _start(self, job: Job) -> None:
        self._running[job.target.id] += 1
        task = asyncio.create_task(self._deliver(job), name=f"delivery-{job.claim.delivery_id}")
        self._tasks[task] = job
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._tasks.pop(task)
        self._running[job.target.id] -= 1
        if task.cancelled():
            self._interrupted.append(job)
            return
        self._handing_over.discard(job.claim.delivery_id)
        self._start_jobs()  # the next claimed job need not wait for this outcome's commit
        if self._round_due(job.target.id):
            self.wake.set()
        elif self._record_timer is None:
            loop = asyncio.get_running_loop()
            # No round began since this finished, so none began within the gap before it fires.
            self._record_timer = loop.call_later(OUTCOME_DELAY, self._record_due)

    def _record_due(self) -> None:
        self._record_timer = None
        self.wake.set()

    def _round_due(self, lane: int) -> bool:
        """Whether a finished delivery calls a round at once, or its outcome waits for the next.

        At once when its lane runs low while more may be due: it has fewer claims waiting
        than slots and its last claim did not come back short. Otherwise the outcome waits
        for the next round, at most `OUTCOME_DELAY`: under load a round then records several
        outcomes in one commit and claims for several slots, and when documents trickle in
        one at a time the round that claims the next one records this one too, instead of a
        round (and a commit) for each.
        """
        waiting = len(self._backlog.get(lane, ()))
        return lane not in self._dry and waiting < self._limits.get(lane, 1)

    async def _deliver(self, job: Job) -> None:
        claim, name = job.claim, job.target.name
        structlog.contextvars.bind_contextvars(doc=job.row.document_id, integration=name)
        try:
            data = job.data
            if data is None:
                data = await asyncio.to_thread(self.store.blobs.get, job.blob)
            item = job.outgoing(data)
            adapter = await self._adapter(job.target)
            if claim.uncertain:
                log.warning("delivery_uncertain", delivery=claim.delivery_id, doc=item.document_id)
            self._handing_over.add(claim.delivery_id)
            with metrics.DELIVERY_SECONDS.labels(name).time():
                ref = await adapter.deliver(item)
            crashpoint("delivery_handed_over")
        except DeliveryError as exc:
            metrics.DELIVERIES.labels(name, _outcome(exc)).inc()
            self._outcomes.append(Outcome(claim, error=exc))
        except Exception as exc:
            log.exception("delivery_crashed", delivery=claim.delivery_id)
            error = TransientError("internal-error", f"{type(exc).__name__}: {exc}")
            self._outcomes.append(Outcome(claim, error=error))
        else:
            metrics.DELIVERIES.labels(name, "sent").inc()
            self._outcomes.append(Outcome(claim, ref=ref))

    async def _adapter(self, target: rounds.Target) -> Adapter:
        cached = self._adapters.get(target.id)
        if cached is not None and cached[0] == target.options:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        adapter = make_adapter(target.kind, target.name, target.options)
        self._adapters[target.id] = (dict(target.options), adapter)
        return adapter

    async def _stop(self) -> None:
        """Stop running deliveries, then one last round: record what finished, expire what
        was handing over (uncertain) and release what never started."""
        self._stopping = True
        if self._record_timer is not None:
            self._record_timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        interrupted = [job.claim for job in self._interrupted]
        waiting = [job.claim for backlog in self._backlog.values() for job in backlog]
        work = Round(
            outcomes=self._outcomes,
            release=[c for c in interrupted if c.delivery_id not in self._handing_over] + waiting,
            expire=[c for c in interrupted if c.delivery_id in self._handing_over],
        )
        try:
            result = await asyncio.shield(
                asyncio.get_running_loop().run_in_executor(
                    self._db, rounds.run, self.store, self.settings, work
                )
            )
        except Exception:  # the leases still run out, and the next claim reconciles
            log.exception("delivery_final_round_failed", outcomes=len(work.outcomes))
        else:
            for outcome, owned in zip(work.outcomes, result.owned, strict=True):
                _log_outcome(outcome, owned)
        finally:
            if self._db is not None:
                self._db.shutdown(wait=False)
            await self.close()


def _log_outcome(outcome: Outcome, owned: bool) -> None:
    claim, error = outcome.claim, outcome.error
    if error is None and owned:
        log.info("delivered", delivery=claim.delivery_id, remote=outcome.ref)
    elif error is None:
        log.warning("attempt_superseded", delivery=claim.delivery_id, outcome="sent")
    else:
        event = "delivery_failed" if owned else "attempt_superseded"
        log.warning(event, delivery=claim.delivery_id, code=error.code, text=error.text)


def _outcome(error: DeliveryError) -> str:
    if isinstance(error, RejectedError):
        return "rejected"
    return "failed" if isinstance(error, PermanentError) else "deferred"
