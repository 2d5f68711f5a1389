"""The delivery runner: woken from another thread as the rules stage wakes it, a backlog
recorded a round of several documents at a time without waiting for the poll, and a
document whose bytes cannot be read is a failed attempt, not a lost delivery."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, select

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.base import Outgoing
from gateway.outbound.worker import OUTCOME_DELAY, ROUND_GAP, DeliveryRunner
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Delivery, DeliveryState, DocType, Document, Dossier, Integration

# Far longer than the test waits: a delivery within the wait was woken, not polled.
SLOW_POLL = DeliverySettings(poll_interval=60)


def _store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/w.db", tmp_path / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        integration = Integration(name="drop", kind="directory", options={"path": str(tmp_path)})
        session.add(Dossier(slug="acme", integration=integration))
    return store


def _queue_one(store: Store, n: int = 0) -> None:
    with store.session.begin() as session:
        dossier = session.scalars(select(Dossier)).one()
        data = f"<Invoice n='{n}'/>".encode() if n else b"<Invoice/>"
        doc = Document(
            dossier=dossier,
            filename=f"i{n or ''}.xml",
            media_type="application/xml",
            blob_sha256=store.blobs.put(data),
            size=len(data),
            doc_type=DocType.PURCHASE_INVOICE,
        )
        session.add(doc)
        session.flush()
        queue.send(session, doc, SLOW_POLL)


def _states(store: Store) -> list[DeliveryState]:
    with store.session() as session:
        return list(session.scalars(select(Delivery.state)))


async def _until_sent(store: Store, count: int, timeout: float) -> list[DeliveryState]:
    """The states once `count` deliveries are sent, polled far faster than the runner polls."""
    async with asyncio.timeout(timeout):
        while (states := await asyncio.to_thread(_states, store)).count(DeliveryState.SENT) < count:
            await asyncio.sleep(0.05)
    return states


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    async with asyncio.timeout(15):
        await asyncio.gather(task, return_exceptions=True)


def _count_rounds(store: Store) -> list[int]:
    """From now on, one entry per commit of the runner's database thread: one per round."""
    rounds: list[int] = []

    def counted(_conn: object) -> None:
        if threading.current_thread().name.startswith("delivery-db"):
            rounds.append(1)

    event.listen(store.engine, "commit", counted)
    return rounds


def test_a_document_queued_by_another_thread_is_delivered_without_waiting_for_the_poll(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    runner = DeliveryRunner(store, SLOW_POLL)

    def rules_stage() -> None:
        _queue_one(store)
        runner.wake.set()

    async def scenario() -> list[DeliveryState]:
        task = asyncio.create_task(runner.run())
        # Plain threads and a plain sleep: nothing the test does wakes the loop itself.
        threading.Timer(0.3, rules_stage).start()
        await asyncio.sleep(3)
        states = await asyncio.to_thread(_states, store)
        await _stop(task)
        return states

    assert asyncio.run(scenario()) == [DeliveryState.SENT]
    assert (tmp_path / "Invoice_import" / "1-i.xml").read_bytes() == b"<Invoice/>"


def test_a_backlog_is_recorded_several_documents_per_commit_and_the_last_without_the_poll(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    count = 60
    for n in range(1, count + 1):
        _queue_one(store, n)
    commits = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    runner = DeliveryRunner(store, SLOW_POLL)

    async def scenario() -> list[DeliveryState]:
        task = asyncio.create_task(runner.run())
        states = await _until_sent(store, count, timeout=20)  # far shorter than the poll
        await _stop(task)
        return states

    assert asyncio.run(scenario()) == [DeliveryState.SENT] * count
    assert len(list((tmp_path / "Invoice_import").iterdir())) == count
    # One commit per round; a round per finished document would be about one per two.
    assert len(commits) < count / 5


def _rounds_for(tmp_path: Path, count: int, spacing: float) -> int:
    """Rounds (commits in the runner's database thread) while `count` documents are queued
    one at a time, `spacing` seconds apart, and delivered."""
    store = _store(tmp_path)
    runner = DeliveryRunner(store, SLOW_POLL)

    def rules_stage() -> None:
        for n in range(1, count + 1):
            _queue_one(store, n)
            runner.wake.set()
            time.sleep(spacing)

    async def scenario() -> tuple[list[DeliveryState], int]:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.2)
        rounds = _count_rounds(store)
        await asyncio.to_thread(rules_stage)
        states = await _until_sent(store, count, timeout=10)
        await _stop(task)
        return states, len(rounds)

    states, rounds = asyncio.run(scenario())
    assert states == [DeliveryState.SENT] * count
    return rounds


def test_documents_queued_one_at_a_time_take_one_round_each_not_two(tmp_path: Path) -> None:
    """The round that claims the next document records the previous one's outcome, instead
    of a round of its own as soon as it finished (when nothing else was running)."""
    # Further apart than ROUND_GAP, closer than OUTCOME_DELAY; a delivery to a directory is
    # over well within it.
    count = 20
    spacing = (ROUND_GAP + OUTCOME_DELAY) / 2
    # About a round per document queued; twice that when each outcome had its own.
    assert _rounds_for(tmp_path, count, spacing) <= 1.5 * count


def test_wake_ups_closer_than_the_round_gap_share_a_round(tmp_path: Path) -> None:
    """However often the rules stage wakes the runner, rounds begin ROUND_GAP apart at most,
    so documents queued within it share one claim and one commit."""
    store = _store(tmp_path)
    runner = DeliveryRunner(store, SLOW_POLL)

    def rules_stage() -> float:
        started = time.monotonic()
        for _ in range(100):
            runner.wake.set()
            time.sleep(0.002)
        return time.monotonic() - started

    async def scenario() -> tuple[float, int]:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.2)
        rounds = _count_rounds(store)
        waking = await asyncio.to_thread(rules_stage)
        await asyncio.sleep(0.1)
        await _stop(task)
        return waking, len(rounds)

    waking, rounds = asyncio.run(scenario())
    # One round when woken, then one per gap at most; a round per wake-up was about 50.
    assert rounds <= waking / ROUND_GAP + 3


class HeldAdapter:
    """Delivers document `quick` at once and holds every other until `release` is set."""

    def __init__(self, quick: int) -> None:
        self.quick = quick
        self.release = asyncio.Event()

    async def deliver(self, item: Outgoing) -> str:
        if item.document_id != self.quick:
            await self.release.wait()
        return f"ref-{item.document_id}"

    async def close(self) -> None:
        return None


def test_an_outcome_is_recorded_soon_while_a_busy_lane_keeps_its_rounds_batched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries still running and a lane full of claims batch rounds, but a finished
    delivery's outcome does not wait for the poll: until recorded, a crash leaves it
    uncertain."""
    store = _store(tmp_path)
    for n in range(1, 41):
        _queue_one(store, n)
    adapter = HeldAdapter(quick=1)
    monkeypatch.setattr("gateway.outbound.worker.make_adapter", lambda *_: adapter)
    runner = DeliveryRunner(store, SLOW_POLL)

    async def scenario() -> list[DeliveryState]:
        task = asyncio.create_task(runner.run())
        async with asyncio.timeout(20):  # far shorter than the poll
            while DeliveryState.SENT not in (states := await asyncio.to_thread(_states, store)):
                await asyncio.sleep(0.05)
        adapter.release.set()
        await _stop(task)
        return states

    states = asyncio.run(scenario())
    assert states.count(DeliveryState.SENT) == 1
    assert states.count(DeliveryState.SENDING) >= 3  # the held ones were still running


def test_a_document_whose_blob_is_gone_is_deferred_with_the_reason(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _queue_one(store)
    with store.session() as session:
        store.blobs.path(session.scalars(select(Document.blob_sha256)).one()).unlink()
    runner = DeliveryRunner(store, DeliverySettings(poll_interval=0.05))

    async def scenario() -> Delivery:
        task = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(15):
                while await asyncio.to_thread(_states, store) != [DeliveryState.DEFERRED]:
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            async with asyncio.timeout(15):
                await asyncio.gather(task, return_exceptions=True)
        with store.session() as session:
            return session.scalars(select(Delivery)).one()

    delivery = asyncio.run(scenario())
    assert delivery.last_error_code == "internal-error"
    assert "FileNotFoundError" in delivery.last_error_text


def test_integrations_are_read_once_a_poll_interval_and_a_change_is_taken_up_after_it(
    tmp_path: Path,
) -> None:
    """Rounds in quick succession go by the integrations a recent round read; once the poll
    interval has passed a round reads them again, and a new drop path is used."""
    store = _store(tmp_path)
    settings = DeliverySettings(poll_interval=0.5)
    runner = DeliveryRunner(store, settings)
    reads: list[int] = []

    def counted(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "FROM integrations" in statement:
            reads.append(1)

    def move_drop() -> None:
        with store.session.begin() as session:
            integration = session.scalars(select(Integration)).one()
            integration.options = {"path": str(tmp_path / "moved")}
        _queue_one(store, 2)

    async def scenario() -> int:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.1)
        event.listen(store.engine, "before_cursor_execute", counted)
        for _ in range(10):  # ten rounds within 0.3 s
            runner.wake.set()
            await asyncio.sleep(ROUND_GAP + 0.01)
        quick = len(reads)
        await asyncio.to_thread(move_drop)
        await asyncio.sleep(settings.poll_interval)
        runner.wake.set()
        await _until_sent(store, 1, timeout=10)
        await _stop(task)
        return quick

    assert asyncio.run(scenario()) <= 1
    assert (tmp_path / "moved" / "Invoice_import" / "1-i2.xml").exists()
