"""The rules stage runner: accepted messages become typed documents, one per file and dossier.

Recognition itself (`gateway.rules`) is pure; this module does the I/O around it, a batch of
messages at a time, in three steps:

1. outside any transaction, each message is taken apart from its blob file, its parts written
   to staged blob files, and recognised (`prepare`); a database read only;
2. the staged blobs are made durable together (`BlobStore.publish`);
3. one transaction writes every message's documents, a savepoint each, and commits once.

So the database's write lock is held for inserts only, one commit (one fsync on SQLite) serves
the whole batch, and a committed row never names a blob that is not on disk. A crash before
the commit leaves every message of the batch unprocessed: it is done again whole, and the
blobs already published are found in place. A message that makes processing fail for a reason
other than the database is set aside with that reason (Mailman's "shunt"), alone: its
savepoint is rolled back and the others of the batch are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.config import ConfigError, DeliverySettings, MimeSettings, RecognitionSettings
from gateway.duplicates import mark_duplicate
from gateway.filenames import safe_filename
from gateway.intake.crashpoint import crashpoint
from gateway.outbound import queue
from gateway.pipeline_prepare import Batch, Prepared, ToMake, prepare
from gateway.rules.dedupe import dedupe_key
from gateway.rules.policy import Outcome, Rule
from gateway.rules.recognize import Options
from gateway.rules.xsd import SchemaUnavailable, UblSchemas
from gateway.store.db import Store
from gateway.store.models import Document, Dossier, Event, Message, utcnow

log = structlog.get_logger(__name__)

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
            messages = session.scalars(
                select(Message)
                .where(Message.processed_at.is_(None))
                .order_by(Message.id)
                .limit(limit)
            ).all()
            batch = Batch(session, self.store.blobs, self.rules, self.recognition, self.mime_limits)
            prepared = [prepare(batch, message) for message in messages]
        try:
            self.store.blobs.publish(blob for p in prepared for blob in p.blobs)
        except BaseException:
            for p in prepared:
                p.discard()
            raise
        crashpoint("pipeline_blobs_published")
        if prepared and self._commit(prepared):
            self.on_queued.set()
        return len(messages)

    def _commit(self, prepared: list[Prepared]) -> int:
        """Write the batch in one transaction; returns how many deliveries were queued."""
        queued = 0
        with self.store.session.begin() as session:
            messages = _claim(session, [p.message_id for p in prepared])
            dossiers = _lock_dossiers(session, {d for p in prepared for d in p.dossier_ids})
            for item in prepared:
                message = messages.get(item.message_id)
                if message is not None:
                    queued += self._write_one(session, message, item, dossiers)
            crashpoint("pipeline_before_commit")
        return queued

    def _write_one(
        self, session: Session, message: Message, item: Prepared, dossiers: dict[int, Dossier]
    ) -> int:
        try:
            # Rows are flushed where an id is needed (`_document`, `enqueue`), not before
            # every query: each flush costs a unit of work, and the message has several.
            with session.begin_nested(), session.no_autoflush:
                return self._write(session, message, item, dossiers)
        except OperationalError:
            raise
        except Exception as exc:
            log.exception("pipeline_shunted", message=message.id)
            _shunt(session, message, f"internal-error: {type(exc).__name__}: {exc}")
            return 0

    def _write(
        self, session: Session, message: Message, item: Prepared, dossiers: dict[int, Dossier]
    ) -> int:
        if item.failure:
            log.error("pipeline_shunted", message=message.id, reason=item.failure)
            _shunt(session, message, item.failure)
            return 0
        if item.quarantine:
            _quarantine(session, message, item.quarantine)
            return 0
        if item.skipped:
            detail = {"parts": item.skipped}
            session.add(Event(kind="parts_skipped", message_id=message.id, detail=detail))
        queued = 0
        for make in item.documents:
            dossier = dossiers[make.dossier_id]
            doc = self._document(session, message, dossier, make)
            if make.outcome.auto_send and _auto_sendable(dossier, doc):
                queue.enqueue(session, doc, self.delivery)
                queued += 1
        if not item.dossier_ids:
            message.reason = "no dossier owns any of the recipients any more"
        elif not item.parts:
            message.reason = "no documents in this message"
        return queued

    def _document(
        self, session: Session, message: Message, dossier: Dossier, make: ToMake
    ) -> Document:
        outcome = make.outcome
        doc = Document(
            dossier=dossier,
            message_id=message.id,
            filename=make.filename,
            media_type=make.media_type,
            blob_sha256=make.blob_sha256,
            size=make.size,
            doc_type=outcome.doc_type,
            reason=outcome.reason,
            facts=make.facts,
            dedupe_key=dedupe_key(outcome.doc_type, make.facts),
            matched_rules=outcome.matched,
        )
        _hold(doc, outcome)
        if make.visual_sha256:
            doc.visual_sha256 = make.visual_sha256
            doc.visual_filename = safe_filename(make.visual_filename, fallback="visual.pdf")
        mark_duplicate(session, doc, make.text)
        session.add(doc)
        session.flush()
        session.add(
            Event(
                kind="document_created",
                message_id=message.id,
                document_id=doc.id,
                detail={
                    "type": doc.doc_type.value if doc.doc_type else None,
                    "reason": doc.reason,
                    "visual": doc.visual_filename,
                    "duplicate_of": doc.duplicate_of_id,
                    "rules": [entry["rule"] for entry in outcome.matched],
                },
            )
        )
        log.info(
            "document_created",
            doc=doc.id,
            message=message.id,
            dossier=dossier.slug,
            type=doc.doc_type.value if doc.doc_type else "unrecognised",
            reason=doc.reason,
            duplicate_of=doc.duplicate_of_id,
        )
        return doc


def _claim(session: Session, ids: list[int]) -> dict[int, Message]:
    """The batch's messages still unprocessed, marked processed first thing: on SQLite that
    write takes the write lock before any savepoint (a savepoint that began the transaction
    would commit it when released); on PostgreSQL rows another instance holds are skipped."""
    free = session.scalars(
        select(Message.id)
        .where(Message.id.in_(ids), Message.processed_at.is_(None))
        .with_for_update(skip_locked=True)
    ).all()
    if not free:
        return {}
    now = utcnow()
    session.execute(update(Message).where(Message.id.in_(free)).values(processed_at=now))
    rows = session.scalars(select(Message).where(Message.id.in_(free)))
    return {row.id: row for row in rows}


def _lock_dossiers(session: Session, ids: set[int]) -> dict[int, Dossier]:
    """Serialise duplicate checks per dossier across instances (PostgreSQL; SQLite has a single
    writer anyway): another instance writing to one of these dossiers waits for this commit.
    Locked in id order, so two instances never wait on each other in a circle."""
    rows = session.scalars(
        select(Dossier).where(Dossier.id.in_(ids)).order_by(Dossier.id).with_for_update()
    )
    return {row.id: row for row in rows}


def _shunt(session: Session, message: Message, reason: str) -> None:
    message.processed_at = utcnow()
    message.verdict = "failed"
    message.reason = reason
    session.add(Event(kind="message_shunted", message_id=message.id, detail={"reason": reason}))


def _hold(doc: Document, outcome: Outcome) -> None:
    """A dropped document is kept (archived) and a quarantined one waits; both say by which rule."""
    if outcome.dropped:
        doc.archived = True
        doc.status_reason = f"dropped by rule {outcome.dropped}"
    elif outcome.quarantined:
        doc.status_reason = f"quarantined by rule {outcome.quarantined}"


def recognition_options(settings: RecognitionSettings, source: str = "") -> Options:
    """The recognition options, loading the UBL schemas when configured (once, at start)."""
    schemas = None
    if settings.ubl_xsd_dir is not None:
        try:
            schemas = UblSchemas.load(settings.ubl_xsd_dir)
        except SchemaUnavailable as exc:
            raise ConfigError(source or "config", "recognition.ubl_xsd_dir", str(exc)) from None
    return Options(pdf_min_confidence=settings.pdf_min_confidence, ubl_schemas=schemas)


def _auto_sendable(dossier: Dossier, doc: Document) -> bool:
    """Auto-send takes only what a person would send without a second look."""
    return (
        dossier.auto_send
        and dossier.integration_id is not None
        and doc.doc_type is not None
        and doc.duplicate_of_id is None
    )


def _quarantine(session: Session, message: Message, reason: str) -> None:
    """Kept whole and aside: visible with `gateway quarantine list`, never silently lost."""
    message.processed_at = utcnow()
    message.verdict = "quarantined"
    message.reason = reason
    session.add(Event(kind="message_quarantined", message_id=message.id, detail={"reason": reason}))
    log.warning("message_quarantined", message=message.id, reason=reason)
