"""Deliveries run in-process against real receivers: a real SQLite queue, the real runner.

Faster than a gateway child process and lets a test change the receiver between attempts;
the end-to-end tests in test_delivery_process.py cover the daemon itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.worker import DeliveryRunner
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocType,
    Document,
    Dossier,
    Event,
    Integration,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_INVOICE = REPO / "tests" / "data" / "purchase-invoice-demo.xml"
FAST = DeliverySettings(workers=2, poll_interval=0.05, lease=30, retry_initial=0.2, retry_max=0.5)


def invoice(number: str) -> bytes:
    """The demo invoice with its own number, so every copy is a different document."""
    return DEMO_INVOICE.read_bytes().replace(b"INV-2026-0042", number.encode())


class Harness:
    def __init__(self, tmp_path: Path, settings: DeliverySettings = FAST) -> None:
        self.store: Store = open_store(f"sqlite:///{tmp_path}/h.db", tmp_path / "blobs")
        upgrade(self.store.engine)
        self.settings = settings

    def integration(self, name: str, kind: str, **options: Any) -> None:
        with self.store.session.begin() as session:
            integration = Integration(name=name, kind=kind, options=options)
            session.add(Dossier(slug=name, integration=integration, vat_number="BE0123456749"))

    def document(
        self,
        dossier: str,
        data: bytes,
        filename: str = "invoice.xml",
        doc_type: DocType = DocType.PURCHASE_INVOICE,
        facts: dict[str, Any] | None = None,
    ) -> int:
        with self.store.session.begin() as session:
            owner = session.scalars(select(Dossier).where(Dossier.slug == dossier)).one()
            doc = Document(
                dossier=owner,
                filename=filename,
                media_type="application/xml",
                blob_sha256=self.store.blobs.put(data),
                size=len(data),
                doc_type=doc_type,
                facts=facts or {},
            )
            session.add(doc)
            session.flush()
            queue.send(session, doc, self.settings)
            return doc.id

    def delivery(self, doc_id: int) -> Delivery:
        with self.store.session() as session:
            return session.scalars(select(Delivery).where(Delivery.document_id == doc_id)).one()

    def status(self, doc_id: int) -> tuple[str, str]:
        with self.store.session() as session:
            doc = session.get_one(Document, doc_id)
            return doc.status.value, doc.status_reason

    def events(self, doc_id: int, kind: str) -> list[dict[str, Any]]:
        with self.store.session() as session:
            rows = session.scalars(
                select(Event).where(Event.document_id == doc_id, Event.kind == kind)
            )
            return [e.detail for e in rows]

    def settled(self, *doc_ids: int) -> bool:
        """Every delivery has left queued/sending (deferred counts as settled for one attempt)."""
        return all(
            self.delivery(d).state not in (DeliveryState.QUEUED, DeliveryState.SENDING)
            for d in doc_ids
        )

    def run_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Run the real delivery runner until `done()` holds, then stop it."""
        asyncio.run(self._run_until(done, timeout))

    async def _run_until(self, done: Callable[[], bool], timeout: float) -> None:
        runner = DeliveryRunner(self.store, self.settings)
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + timeout
        try:
            while not await asyncio.to_thread(done):
                if task.done():
                    task.result()
                if time.monotonic() > deadline:
                    raise AssertionError(f"deliveries did not settle within {timeout}s")
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            # Bounded too: a runner that cannot stop is a failure, not a hung test run.
            async with asyncio.timeout(15):
                await asyncio.gather(task, return_exceptions=True)
