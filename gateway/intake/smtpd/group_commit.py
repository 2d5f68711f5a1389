"""Group commit: concurrent SMTP sessions share one database transaction, each still durable.

A session hands in its arrival and waits. If no commit is running, one starts with everything
waiting; arrivals that come in meanwhile form the next batch. There is no timer: under light
load a batch is one message and commits at once, under heavy load batches grow by themselves to
what arrived during one commit (bounded by `max_batch`). Each session is answered only after the
transaction holding its row has committed, so `250` still means "on disk" (invariant 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog
from sqlalchemy.exc import OperationalError

from gateway.intake.accept import Accepted, Arrival

log = structlog.get_logger(__name__)

Commit = Callable[[list[Arrival]], list[Accepted]]

_Waiting = tuple[Arrival, "asyncio.Future[Accepted]"]


class GroupCommitter:
    def __init__(self, commit: Commit, max_batch: int = 256, attempts: int = 3) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self.attempts = attempts
        self._waiting: list[_Waiting] = []
        self._running: asyncio.Task[None] | None = None
        # Its own thread: in the shared default executor a commit would queue behind the very
        # look-ups of the sessions it keeps waiting.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")

    async def commit(self, arrival: Arrival) -> Accepted:
        """Return once `arrival`'s row is committed (with others', possibly)."""
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.append((arrival, future))
        if self._running is None:
            self._running = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                await self._commit_batch(batch)
        finally:
            self._running = None

    async def _commit_batch(self, batch: list[_Waiting]) -> None:
        try:
            results = await self._commit_with_retries([arrival for arrival, _ in batch])
        except Exception as exc:
            log.exception("group_commit_failed", batch=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        log.debug("group_committed", batch=len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _commit_with_retries(self, arrivals: list[Arrival]) -> list[Accepted]:
        """A busy database (another writer past the busy timeout) is worth another try: every
        session of the batch is waiting anyway, and a failure answers all of them `451`."""
        loop = asyncio.get_running_loop()
        attempt = 1
        while True:
            try:
                return await loop.run_in_executor(self._thread, self._commit, arrivals)
            except OperationalError:
                if attempt >= self.attempts:
                    raise
                log.warning("group_commit_retry", batch=len(arrivals), attempt=attempt)
                attempt += 1
