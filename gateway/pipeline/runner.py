"""The rules stage runner: accepted messages become typed documents, one per file and dossier.

Recognition itself (`gateway.rules`) is pure; this module does the I/O around it, a batch of
messages at a time, in three steps:

1. outside any transaction, each message is taken apart from its blob (row or file), its
   parts staged as blobs, and recognised (`prepare`); a database read only;
2. the staged blobs too large to be rows are made durable together as files
   (`BlobStore.publish`);
3. one transaction inserts the small blobs as rows (`blob_rows`), writes every message's
   documents with a few multi-row statements (`gateway.pipeline.write`), and commits once.

So the database's write lock is held for inserts only, one commit (one fsync on SQLite) serves
the whole batch and makes its small blobs durable too, and a committed row never names a blob
that is not on disk. A crash before the commit leaves every message of the batch unprocessed:
it is done again whole, and the files already published are found in place. A message that
makes processing fail for a reason other than the database is set aside with that reason
(Mailman's "shunt"), alone: the batch's transaction is rolled back, its messages are written
again in another, one savepoint each, and the others of the batch are kept. Savepoints are
only taken then: two more statements for every batch bought nothing while none failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.config import ConfigError, DeliverySettings, MimeSettings, RecognitionSettings
from gateway.crashpoint import crashpoint
from gateway.pipeline import rows
from gateway.pipeline.prepare import Batch, Prepared, prepare
from gateway.pipeline.rows import DossierRow
from gateway.pipeline.write import shunt, write_batch
from gateway.rules.policy import Rule
from gateway.rules.recognize import Options
from gateway.rules.xsd import SchemaUnavailable, UblSchemas
from gateway.store import blob_rows
from gateway.store.blobs import Staged
from gateway.store.db import Store
from gateway.store.models import Message, utcnow

log = structlog.get_logger(__name__)

_MESSAGES = cast(Table, Message.__table__)
_FREE = (
    select(_MESSAGES.c.id)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)), _MESSAGES.c.processed_at.is_(None))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(_FREE.scalar_subquery()))
    .values(processed_at=bindparam("at"))
    .returning(_MESSAGES.c.id)
)

_Writer = Callable[[Session, list[Prepared], dict[int, DossierRow]], int]

# Messages per batch: enough to share one commit among many, few enough that the first of a
# batch does not wait long for the last to be recognised.
BATCH = 16


class PipelineRunner:
    def __init__(
        self,
        store: Store,
        delivery: DeliverySettings,
        on_queued: asyncio.Event,
        recognition: Options | None = None,
        rules: Sequence[Rule] = (),
        mime_limits: MimeSettings | None = None,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.on_queued = on_queued
        self.recognition = recognition or Options()
        self.rules = tuple(rules)
        self.mime_limits = mime_limits or MimeSettings()
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await asyncio.to_thread(self.store.blobs.sweep_staging)
        while True:
            self.wake.clear()
            try:
                while await asyncio.to_thread(self.process_batch):
                    pass
            except OperationalError:
                log.exception("pipeline_database_error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delivery.poll_interval):
                    await self.wake.wait()

    def process_batch(self, limit: int = BATCH) -> int:
        """Process up to `limit` pending messages; return how many were taken."""
        with self.store.session() as session:
            messages = rows.pending(session, limit)
            batch = Batch(session, self.store.blobs, self.rules, self.recognition, self.mime_limits)
            prepared = [prepare(batch, message) for message in messages]
        staged = [blob for p in prepared for blob in p.blobs]
        try:
            self.store.blobs.publish([b for b in staged if b.size > blob_rows.ROW_LIMIT])
            crashpoint("pipeline_blobs_published")
            if prepared and self._commit(prepared):
                self.on_queued.set()
        finally:
            # What is left staged: rows' bytes (committed or to be read again), failures.
            for blob in staged:
                blob.discard()
        return len(messages)

    def _commit(self, prepared: list[Prepared]) -> int:
        """Write the batch in one transaction; returns how many deliveries were queued.
        When writing fails for a reason other than the database, the transaction is rolled
        back and the batch written again a message at a time (`_one_by_one`)."""
        try:
            return self._transaction(prepared, self._whole)
        except OperationalError:
            raise
        except Exception:
            log.warning("pipeline_batch_failed", messages=[p.message_id for p in prepared])
            return self._transaction(prepared, self._one_by_one)

    def _transaction(self, prepared: list[Prepared], write: _Writer) -> int:
        with self.store.session.begin() as session:
            free = _claim(session, [p.message_id for p in prepared])
            ours = [p for p in prepared if p.message_id in free]
            blob_rows.insert(session.connection(), _rows(b for p in ours for b in p.blobs))
            dossiers = rows.lock(session, {d for p in prepared for d in p.dossier_ids})
            queued = write(session, ours, dossiers) if ours else 0
            crashpoint("pipeline_before_commit")
        return queued

    def _whole(
        self, session: Session, items: list[Prepared], dossiers: dict[int, DossierRow]
    ) -> int:
        return write_batch(session, items, dossiers, self.delivery)

    def _one_by_one(
        self, session: Session, items: list[Prepared], dossiers: dict[int, DossierRow]
    ) -> int:
        """Each message in a savepoint of its own; one that fails for a reason other than
        the database is shunted, and the others are kept."""
        queued = 0
        for item in items:
            try:
                with session.begin_nested():
                    queued += write_batch(session, [item], dossiers, self.delivery)
            except OperationalError:
                raise
            except Exception as exc:
                log.exception("pipeline_shunted", message=item.message_id)
                reason = f"internal-error: {type(exc).__name__}: {exc}"
                shunt(session, item.message_id, reason)
        return queued


def _claim(session: Session, ids: list[int]) -> set[int]:
    """The batch's messages still unprocessed, marked processed by the transaction's first
    statement: on SQLite that write takes the write lock before anything else is read or
    written; on PostgreSQL rows another instance holds are skipped."""
    claimed = session.connection().execute(_CLAIM, {"ids": ids, "at": utcnow()})
    return set(claimed.scalars().all())


def _rows(staged: Iterable[Staged]) -> list[tuple[str, bytes]]:
    """The staged blobs that are to be rows, with their bytes (read back from a staged file
    when the batch's memory budget had run out)."""
    return [(b.digest, b.read()) for b in staged if b.size <= blob_rows.ROW_LIMIT]


def recognition_options(settings: RecognitionSettings, source: str = "") -> Options:
    """The recognition options, loading the UBL schemas when configured (once, at start)."""
    schemas = None
    if settings.ubl_xsd_dir is not None:
        try:
            schemas = UblSchemas.load(settings.ubl_xsd_dir)
        except SchemaUnavailable as exc:
            raise ConfigError(source or "config", "recognition.ubl_xsd_dir", str(exc)) from None
    return Options(pdf_min_confidence=settings.pdf_min_confidence, ubl_schemas=schemas)
