"""The rules stage runner: accepted messages become typed documents, one per file and dossier.

Recognition itself (`gateway.rules`) is pure; this module does the I/O around it. Each message
is processed in one transaction, so a crash leaves it unprocessed and it is done again whole.
A message that makes processing fail for a reason other than the database is set aside with
that reason (Mailman's "shunt"), so it can never block the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.config import ConfigError, DeliverySettings, MimeSettings, RecognitionSettings
from gateway.duplicates import mark_duplicate
from gateway.filenames import safe_filename
from gateway.intake import mime
from gateway.outbound import queue
from gateway.policy_store import rules_for
from gateway.rules.dedupe import dedupe_key
from gateway.rules.policy import Outcome, Rule
from gateway.rules.recognize import DossierFacts, Options
from gateway.rules.stage import Envelope, Planned, plan
from gateway.rules.xsd import SchemaUnavailable, UblSchemas
from gateway.store.db import Store
from gateway.store.models import Address, Document, Dossier, Event, Message, utcnow

log = structlog.get_logger(__name__)


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

    def process_batch(self, limit: int = 20) -> int:
        """Process up to `limit` pending messages; return how many were taken."""
        with self.store.session() as session:
            pending = session.scalars(
                select(Message.id)
                .where(Message.processed_at.is_(None))
                .order_by(Message.id)
                .limit(limit)
            ).all()
        for message_id in pending:
            self._process_one(message_id)
        return len(pending)

    def _process_one(self, message_id: int) -> None:
        try:
            with self.store.session.begin() as session:
                message = session.scalars(
                    select(Message)
                    .where(Message.id == message_id, Message.processed_at.is_(None))
                    .with_for_update(skip_locked=True)
                ).first()
                if message is None:
                    return
                queued = self._documents(session, message)
        except OperationalError:
            raise
        except Exception as exc:
            log.exception("pipeline_shunted", message=message_id)
            self._shunt(message_id, f"internal-error: {type(exc).__name__}: {exc}")
            return
        if queued:
            self.on_queued.set()

    def _documents(self, session: Session, message: Message) -> int:
        try:
            extraction = mime.extract(self.store.blobs.get(message.raw_sha256), self.mime_limits)
        except mime.Quarantine as exc:
            _quarantine(session, message, str(exc))
            return 0
        parts = extraction.parts
        if extraction.skipped:
            skipped = [
                {"name": s.name, "type": s.media_type, "why": s.why} for s in extraction.skipped
            ]
            session.add(
                Event(kind="parts_skipped", message_id=message.id, detail={"parts": skipped})
            )
        dossiers = _message_dossiers(session, message)
        queued = 0
        for dossier, hint in dossiers:
            for doc, allowed in self._dossier_documents(session, message, dossier, parts, hint):
                if allowed and _auto_sendable(dossier, doc):
                    queue.enqueue(session, doc, self.delivery)
                    queued += 1
        message.processed_at = utcnow()
        if not dossiers:
            message.reason = "no dossier owns any of the recipients any more"
        elif not parts:
            message.reason = "no documents in this message"
        return queued

    def _dossier_documents(
        self,
        session: Session,
        message: Message,
        dossier: Dossier,
        parts: list[mime.Part],
        hint: str,
    ) -> list[tuple[Document, bool]]:
        """One document per part, except a PDF that shows another part: it becomes the visual.
        Each comes with whether the policy allows auto-sending it."""
        facts = DossierFacts(dossier.vat_number, dossier.company_number, tuple(dossier.ibans))
        policy = rules_for(session, dossier, self.rules)
        envelope = Envelope(
            message.mail_from or message.header_from,
            tuple(message.recipients),
            message.subject,
            hint,
        )
        planned = plan(parts, facts, policy, envelope, self.recognition)
        # Serialise one dossier's duplicate checks across instances (PostgreSQL; SQLite has a
        # single writer anyway): a second instance waits here until the first has committed.
        # Taken after recognition, so slow PDFs do not hold it.
        session.execute(select(Dossier.id).where(Dossier.id == dossier.id).with_for_update())
        docs = []
        for item in planned:
            part = parts[item.index]
            doc = self._document(session, message, dossier, part, item)
            docs.append((doc, item.outcome.auto_send))
        return docs

    def _document(
        self,
        session: Session,
        message: Message,
        dossier: Dossier,
        part: mime.Part,
        item: Planned,
    ) -> Document:
        found, visual, outcome = item.found, item.visual, item.outcome
        doc = Document(
            dossier=dossier,
            message_id=message.id,
            filename=part.filename,
            media_type=part.media_type,
            blob_sha256=self.store.blobs.put(part.data),
            size=len(part.data),
            doc_type=outcome.doc_type,
            reason=outcome.reason,
            facts=found.facts,
            dedupe_key=dedupe_key(outcome.doc_type, found.facts),
            matched_rules=outcome.matched,
        )
        _hold(doc, outcome)
        if visual is not None:
            doc.visual_sha256 = self.store.blobs.put(visual.data)
            doc.visual_filename = safe_filename(visual.filename, fallback="visual.pdf")
        mark_duplicate(session, doc, found.text)
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

    def _shunt(self, message_id: int, reason: str) -> None:
        with self.store.session.begin() as session:
            message = session.get_one(Message, message_id)
            message.processed_at = utcnow()
            message.verdict = "failed"
            message.reason = reason
            session.add(
                Event(kind="message_shunted", message_id=message_id, detail={"reason": reason})
            )


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


def _message_dossiers(session: Session, message: Message) -> list[tuple[Dossier, str]]:
    """The dossiers the door routed the message to, with their type hints; messages stored
    before doors recorded routes are routed by their exact recipient addresses."""
    if not message.routes:
        return [(d, "") for d in _recipient_dossiers(session, message.recipients)]
    hints = {r["dossier"]: r.get("hint", "") for r in message.routes}
    rows = session.scalars(select(Dossier).where(Dossier.slug.in_(hints)).order_by(Dossier.id))
    return [(d, hints[d.slug]) for d in rows]


def _recipient_dossiers(session: Session, recipients: list[str]) -> list[Dossier]:
    wanted = {r.strip().lower() for r in recipients}
    rows = session.scalars(
        select(Dossier).join(Address).where(Address.address.in_(wanted)).order_by(Dossier.id)
    ).unique()
    return list(rows)
