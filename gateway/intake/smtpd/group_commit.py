"""Group commit: concurrent SMTP sessions share one database transaction, each still durable.

A session's arrival is handed in (`put`, from any thread: usually the one that just made the
message durable, so the event loop is not woken in between) together with the future its
session awaits. One thread takes whatever is waiting, commits it in one transaction and wakes
the event loop once for the whole batch. Under heavy load batches grow by themselves to what
arrived during one commit (bounded by `max_batch`). Sessions that come one at a time, a few
milliseconds apart, would each have a transaction of their own, which costs about five times
the CPU of one more row in it; so while messages come less than `linger` seconds apart, a batch
waits up to `linger` for company (as Kafka's producers linger). A message after a quiet spell
commits at once. Each session is answered only after the transaction holding its row has
committed, so `250` still means "on disk" (invariant 1).
When the thread stops it calls `on_stop` (the commit's kept connection is closed there).
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import structlog
from sqlalchemy.exc import OperationalError

from gateway.intake.accept import Accepted, Arrival

log = structlog.get_logger(__name__)

Commit = Callable[[list[Arrival]], list[Accepted]]

# An arrival and the future its session awaits; None (from `close`) stops the thread.
_Waiting = tuple[Arrival, "asyncio.Future[Accepted]"]


class GroupCommitter:
    def __init__(
        self,
        commit: Commit,
        max_batch: int = 256,
        attempts: int = 3,
        on_stop: Callable[[], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        self._commit = commit
        self.linger = linger
        # When the thread last took a message (monotonic), to tell a busy door from a quiet one.
        self._last_taken = -math.inf
        self._on_stop = on_stop
        self.max_batch = max_batch
        self.attempts = attempts
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        # Its own thread: in a shared executor a commit would queue behind the very work of
        # the sessions it keeps waiting.
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def commit(self, arrival: Arrival) -> Accepted:
        """Return once `arrival`'s row is committed (with others', possibly)."""
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self.put(arrival, future)
        return await future

    def put(self, arrival: Arrival, future: asyncio.Future[Accepted]) -> None:
        """Commit `arrival` with the next batch and settle `future` (on its own event loop)
        with the result; safe to call from any thread."""
        if self._thread is None:
            self._start()
        self._waiting.put((arrival, future))

    def close(self) -> None:
        """Let the thread finish what is waiting, then stop."""
        if self._thread is not None:
            self._waiting.put(None)

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._take_batches()
        finally:
            if self._on_stop is not None:
                self._on_stop()

    def _take_batches(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._commit_batch(batch)
            if stop:
                return

    def _gather(self, first: _Waiting) -> tuple[list[_Waiting], bool]:
        """`first`, what is waiting already, and while the door is busy (the message before
        came less than `linger` before it) what arrives within `linger` of it, up to
        `max_batch`; and whether `close` was called meanwhile."""
        batch = [first]
        now = time.monotonic()
        deadline = now + self.linger if now - self._last_taken < self.linger else now
        self._last_taken = now
        while len(batch) < self.max_batch:
            wait = deadline - time.monotonic()
            try:
                item = self._waiting.get(timeout=wait) if wait > 0 else self._waiting.get_nowait()
            except queue.Empty:
                return batch, False
            if item is None:
                return batch, True
            batch.append(item)
            self._last_taken = time.monotonic()
        return batch, False

    def _commit_batch(self, batch: list[_Waiting]) -> None:
        try:
            results: list[Accepted] | Exception = self._commit_with_retries(
                [arrival for arrival, _ in batch]
            )
        except Exception as exc:
            log.exception("group_commit_failed", batch=len(batch))
            results = exc
        else:
            log.debug("group_committed", batch=len(batch))
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[_Settled]] = defaultdict(list)
        for n, (_, future) in enumerate(batch):
            outcome = results if isinstance(results, Exception) else results[n]
            by_loop[future.get_loop()].append((future, outcome))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:
                log.warning("group_commit_loop_closed", batch=len(settled))

    def _commit_with_retries(self, arrivals: list[Arrival]) -> list[Accepted]:
        """A busy database (another writer past the busy timeout) is worth another try: every
        session of the batch is waiting anyway, and a failure answers all of them `451`."""
        attempt = 1
        while True:
            try:
                return self._commit(arrivals)
            except OperationalError:
                if attempt >= self.attempts:
                    raise
                log.warning("group_commit_retry", batch=len(arrivals), attempt=attempt)
                attempt += 1


_Settled = tuple["asyncio.Future[Accepted]", "Accepted | Exception"]


def _settle(settled: list[_Settled]) -> None:
    """On the event loop: answer every session of a batch; a session gone meanwhile (its
    future cancelled) is skipped."""
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
