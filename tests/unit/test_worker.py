"""The delivery runner: woken from another thread as the rules stage wakes it, and a
document whose bytes cannot be read is a failed attempt, not a lost delivery."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import select

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.worker import DeliveryRunner
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


def _queue_one(store: Store) -> None:
    with store.session.begin() as session:
        dossier = session.scalars(select(Dossier)).one()
        doc = Document(
            dossier=dossier,
            filename="i.xml",
            media_type="application/xml",
            blob_sha256=store.blobs.put(b"<Invoice/>"),
            size=10,
            doc_type=DocType.PURCHASE_INVOICE,
        )
        session.add(doc)
        session.flush()
        queue.send(session, doc, SLOW_POLL)


def _states(store: Store) -> list[DeliveryState]:
    with store.session() as session:
        return list(session.scalars(select(Delivery.state)))


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
        task.cancel()
        async with asyncio.timeout(15):
            await asyncio.gather(task, return_exceptions=True)
        return states

    assert asyncio.run(scenario()) == [DeliveryState.SENT]
    assert (tmp_path / "Invoice_import" / "1-i.xml").read_bytes() == b"<Invoice/>"


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
