"""Delivery workers: claim a due delivery, hand it to its integration's adapter, record the outcome.

Database calls run in threads (SQLite commits fsync); adapters are async and cached per
integration so connections are reused between documents. Each integration gets at most its
`concurrency` deliveries at once from this process: claims skip integrations that are full,
so one slow package never holds every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import structlog
from sqlalchemy import select

from gateway import metrics
from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.base import (
    Adapter,
    DeliveryError,
    Outgoing,
    PermanentError,
    RejectedError,
    TransientError,
)
from gateway.outbound.kinds import concurrency, make_adapter
from gateway.store.db import Store
from gateway.store.models import Delivery, Integration

log = structlog.get_logger(__name__)


class DeliveryRunner:
    def __init__(self, store: Store, settings: DeliverySettings) -> None:
        self.store = store
        self.settings = settings
        self.wake = asyncio.Event()
        self._adapters: dict[int, tuple[dict[str, Any], Adapter]] = {}
        self._busy: Counter[int] = Counter()
        self._claiming = asyncio.Lock()

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
            async with self._claiming:
                claims = await self._take()
                self._busy.update(c.integration_id for c in claims)
            if not claims:
                self.wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # races its timeout, and the runner would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval):
                        await self.wake.wait()
                continue
            for index, claim in enumerate(claims):
                try:
                    await self._deliver(claim)
                except asyncio.CancelledError:
                    await asyncio.shield(self._give_back(claims[index + 1 :]))
                    raise
                finally:
                    self._busy[claim.integration_id] -= 1
            self.wake.set()  # a slot is free again: a sibling waiting on a full integration may go

    async def _take(self) -> list[queue.Claim]:
        """Claim due deliveries. The claim commits in a thread that a shutdown cannot stop, so
        a cancellation waits for it and gives the claims back rather than orphan them for a
        whole lease."""
        claiming = asyncio.ensure_future(asyncio.to_thread(self._claim, dict(self._busy)))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            await self._give_back(await claiming)
            raise

    async def _give_back(self, claims: list[queue.Claim]) -> None:
        for claim in claims:
            await asyncio.to_thread(self._release, claim, False)

    def _claim(self, busy: dict[int, int]) -> list[queue.Claim]:
        with self.store.session.begin() as session:
            limits = {
                iid: concurrency(options)
                for iid, options in session.execute(select(Integration.id, Integration.options))
            }
            full = {iid for iid, n in busy.items() if n >= limits.get(iid, 1)}
            return queue.claim(session, self.settings.lease, limit=1, busy=full)

    async def _deliver(self, claim: queue.Claim) -> None:
        handing_over = False
        name = "unknown"
        keeper = asyncio.create_task(self._keep_lease(claim))
        try:
            item, integration = await asyncio.to_thread(self._load, claim)
            name = integration.name
            structlog.contextvars.bind_contextvars(doc=item.document_id, integration=name)
            adapter = await self._adapter(integration)
            if claim.uncertain:
                log.warning("delivery_uncertain", delivery=claim.delivery_id, doc=item.document_id)
            handing_over = True
            with metrics.DELIVERY_SECONDS.labels(name).time():
                ref = await adapter.deliver(item)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self._release, claim, handing_over))
            raise
        except DeliveryError as exc:
            metrics.DELIVERIES.labels(name, _outcome(exc)).inc()
            await asyncio.to_thread(self._record_failure, claim, exc)
        except Exception as exc:
            log.exception("delivery_crashed", delivery=claim.delivery_id)
            error = TransientError("internal-error", f"{type(exc).__name__}: {exc}")
            await asyncio.to_thread(self._record_failure, claim, error)
        else:
            metrics.DELIVERIES.labels(name, "sent").inc()
            await asyncio.to_thread(self._record_success, claim, ref)
        finally:
            keeper.cancel()
            structlog.contextvars.unbind_contextvars("doc", "integration")

    async def _keep_lease(self, claim: queue.Claim) -> None:
        """Renew the lease while a long upload runs, so nobody takes a live attempt over."""
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            if not await asyncio.to_thread(self._renew, claim):
                log.warning("lease_lost", delivery=claim.delivery_id, attempt=claim.attempt_id)
                return

    def _renew(self, claim: queue.Claim) -> bool:
        with self.store.session.begin() as session:
            return queue.renew(session, claim, self.settings.lease)

    def _load(self, claim: queue.Claim) -> tuple[Outgoing, Integration]:
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
                vat=dossier.vat_number,
                uncertain=claim.uncertain,
            )
            return item, delivery.integration

    async def _adapter(self, integration: Integration) -> Adapter:
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
            owned = queue.complete(session, claim, ref)
        if owned:
            log.info("delivered", delivery=claim.delivery_id, remote=ref)
        else:
            log.warning("attempt_superseded", delivery=claim.delivery_id, outcome="sent")

    def _record_failure(self, claim: queue.Claim, error: DeliveryError) -> None:
        with self.store.session.begin() as session:
            owned = queue.fail(session, claim, error, self.settings)
        event = "delivery_failed" if owned else "attempt_superseded"
        log.warning(event, delivery=claim.delivery_id, code=error.code, text=error.text)

    def _release(self, claim: queue.Claim, handing_over: bool) -> None:
        with self.store.session.begin() as session:
            if handing_over:
                queue.expire(session, claim)
            else:
                queue.release(session, claim)


def _outcome(error: DeliveryError) -> str:
    if isinstance(error, RejectedError):
        return "rejected"
    return "failed" if isinstance(error, PermanentError) else "deferred"
