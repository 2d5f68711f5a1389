"""Delivery workers: claim a due delivery, hand it to its integration's adapter, record the outcome.

Database calls run in threads (SQLite commits fsync); adapters are async and cached per
integration so connections are reused between documents.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.base import Adapter, DeliveryError, Outgoing, TransientError
from gateway.outbound.kinds import make_adapter
from gateway.store.db import Store
from gateway.store.models import Delivery

log = structlog.get_logger(__name__)


class DeliveryRunner:
    def __init__(self, store: Store, settings: DeliverySettings) -> None:
        self.store = store
        self.settings = settings
        self.wake = asyncio.Event()
        self._adapters: dict[int, tuple[dict[str, Any], Adapter]] = {}

    async def run(self) -> None:
        """Run `settings.workers` loops until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.settings.workers):
                    group.create_task(self._loop())
        finally:
            await self.close()

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.close()
        self._adapters.clear()

    async def _loop(self) -> None:
        while True:
            claims = await asyncio.to_thread(self._claim)
            if not claims:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_interval)
                continue
            for claim in claims:
                await self._deliver(claim)

    def _claim(self) -> list[queue.Claim]:
        with self.store.session.begin() as session:
            return queue.claim(session, self.settings.lease, limit=1)

    async def _deliver(self, claim: queue.Claim) -> None:
        try:
            item, integration = await asyncio.to_thread(self._load, claim)
            adapter = await self._adapter(integration)
            ref = await adapter.deliver(item)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._release, claim))
            raise
        except DeliveryError as exc:
            await asyncio.to_thread(self._record_failure, claim, exc)
        except Exception as exc:
            log.exception("delivery_crashed", delivery=claim.delivery_id)
            error = TransientError("internal-error", f"{type(exc).__name__}: {exc}")
            await asyncio.to_thread(self._record_failure, claim, error)
        else:
            await asyncio.to_thread(self._record_success, claim, ref)

    def _load(self, claim: queue.Claim) -> tuple[Outgoing, Any]:
        with self.store.session() as session:
            delivery = session.get_one(Delivery, claim.delivery_id)
            doc, dossier = delivery.document, delivery.document.dossier
            item = Outgoing(
                delivery_id=delivery.id,
                attempt_id=claim.attempt_id,
                document_id=doc.id,
                dossier=dossier.slug,
                accounting_file_id=dossier.accounting_file_id,
                doc_type=doc.doc_type.value if doc.doc_type else "",
                filename=doc.filename,
                media_type=doc.media_type,
                data=self.store.blobs.get(doc.blob_sha256),
                sha256=doc.blob_sha256,
                facts=dict(doc.facts),
                overrides=dict(dossier.overrides),
            )
            return item, delivery.integration

    async def _adapter(self, integration: Any) -> Adapter:
        cached = self._adapters.get(integration.id)
        if cached is not None and cached[0] == integration.options:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        adapter = make_adapter(integration.kind, integration.name, integration.options)
        self._adapters[integration.id] = (dict(integration.options), adapter)
        return adapter

    def _record_success(self, claim: queue.Claim, ref: str) -> None:
        with self.store.session.begin() as session:
            queue.complete(session, claim, ref)
        log.info("delivered", delivery=claim.delivery_id, remote=ref)

    def _record_failure(self, claim: queue.Claim, error: DeliveryError) -> None:
        with self.store.session.begin() as session:
            queue.fail(session, claim, error, self.settings)
        log.warning("delivery_failed", delivery=claim.delivery_id, code=error.code, text=error.text)

    def _release(self, claim: queue.Claim) -> None:
        with self.store.session.begin() as session:
            queue.release(session, claim)
