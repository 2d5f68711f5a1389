"""The rules stage's first step, before any transaction: a message taken apart into staged
blob files and recognised for each of its dossiers, which only reads the database.

What comes out (`Prepared`) is small whatever the message's size: file names, hashes, facts
and decisions; the bytes are in staged blobs, which the runner makes durable (rows in its
transaction, files published before it) with the rows that name them. A message that is a blob
row is read from the bytes the pending query brought. Dossiers and their policies are read once
per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway import mime
from gateway.config import MimeSettings
from gateway.pipeline import rows
from gateway.pipeline.policy_store import rules_for
from gateway.pipeline.rows import DossierRow, Pending
from gateway.rules.policy import Outcome, Rule
from gateway.rules.recognize import DossierFacts, Options
from gateway.rules.stage import Envelope, Planned, plan
from gateway.store.blobs import BlobStore, Staged

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ToMake:
    """One document to insert: its file (published by then), and what was decided about it."""

    dossier_id: int
    filename: str
    media_type: str
    blob_sha256: str
    size: int
    outcome: Outcome
    facts: dict[str, Any]
    # A plain PDF's text, for the duplicate check against earlier structured documents.
    text: str = ""
    visual_sha256: str = ""
    visual_filename: str = ""


@dataclass
class Prepared:
    """One message made ready: documents to insert, or why it is quarantined or failed."""

    message_id: int
    quarantine: str = ""
    failure: str = ""
    parts: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    dossier_ids: list[int] = field(default_factory=list)
    documents: list[ToMake] = field(default_factory=list)
    blobs: list[Staged] = field(default_factory=list)

    def discard(self) -> None:
        """Drop the documents' staged blobs."""
        for blob in self.blobs:
            blob.discard()
        self.blobs = []


@dataclass
class Batch:
    """What the messages of one batch share: a read session, and what it has read."""

    session: Session
    blobs: BlobStore
    rules: Sequence[Rule]
    options: Options
    limits: MimeSettings
    by_slug: dict[str, DossierRow | None] = field(default_factory=dict)
    by_recipients: dict[frozenset[str], list[DossierRow]] = field(default_factory=dict)
    policies: dict[int, list[Rule]] = field(default_factory=dict)

    def dossiers(self, message: Pending) -> list[tuple[DossierRow, str]]:
        """The dossiers the door routed the message to, with their type hints; messages stored
        before doors recorded routes are routed by their exact recipient addresses."""
        if not message.routes:
            return [(d, "") for d in self._by_recipients(message.recipients)]
        hints = {r["dossier"]: r.get("hint", "") for r in message.routes}
        missing = [slug for slug in hints if slug not in self.by_slug]
        if missing:
            found = rows.by_slugs(self.session, missing)
            self.by_slug.update({slug: found.get(slug) for slug in missing})
        known = [d for d in (self.by_slug[slug] for slug in hints) if d is not None]
        return [(d, hints[d.slug]) for d in sorted(known, key=lambda d: d.id)]

    def _by_recipients(self, recipients: list[str]) -> list[DossierRow]:
        wanted = frozenset(r.strip().lower() for r in recipients)
        if wanted not in self.by_recipients:
            self.by_recipients[wanted] = rows.by_addresses(self.session, wanted)
        return self.by_recipients[wanted]

    def policy(self, dossier: DossierRow) -> list[Rule]:
        if dossier.id not in self.policies:
            self.policies[dossier.id] = rules_for(self.session, dossier, self.rules)
        return self.policies[dossier.id]


def prepare(batch: Batch, message: Pending) -> Prepared:
    """Take `message` apart and recognise its files; never raises but for the database."""
    result = Prepared(message.id)
    try:
        source = batch.blobs.path(message.raw_sha256) if message.held is None else message.held
        extraction = mime.extract_to_blobs(source, batch.limits, batch.blobs)
    except mime.Quarantine as exc:
        result.quarantine = str(exc)
        return result
    except Exception as exc:
        return _failed(result, message, exc)
    try:
        _recognise(batch, message, extraction, result)
    except BaseException as exc:
        for part in extraction.parts:
            part.blob.discard()
        result.discard()
        if isinstance(exc, OperationalError) or not isinstance(exc, Exception):
            raise
        return _failed(result, message, exc)
    return result


def _failed(result: Prepared, message: Pending, exc: Exception) -> Prepared:
    log.exception("pipeline_prepare_failed", message=message.id)
    result.failure = f"internal-error: {type(exc).__name__}: {exc}"
    return result


def _recognise(
    batch: Batch, message: Pending, extraction: mime.Extraction[mime.StoredPart], result: Prepared
) -> None:
    parts = extraction.parts
    result.parts = len(parts)
    result.skipped = [
        {"name": s.name, "type": s.media_type, "why": s.why} for s in extraction.skipped
    ]
    dossiers = batch.dossiers(message)
    result.dossier_ids = [dossier.id for dossier, _ in dossiers]
    for dossier, hint in dossiers:
        facts = DossierFacts(dossier.vat_number, dossier.company_number, dossier.ibans)
        sender = message.mail_from or message.header_from
        envelope = Envelope(sender, tuple(message.recipients), message.subject, hint)
        for item in plan(parts, facts, batch.policy(dossier), envelope, batch.options):
            result.documents.append(_to_make(batch, dossier, parts, item, result))
    used = {make.blob_sha256 for make in result.documents}
    used |= {make.visual_sha256 for make in result.documents}
    for part in parts:
        if part.blob.digest in used:
            result.blobs.append(part.blob)
        else:
            part.blob.discard()


def _to_make(
    batch: Batch,
    dossier: DossierRow,
    parts: list[mime.StoredPart],
    item: Planned,
    result: Prepared,
) -> ToMake:
    part, visual = parts[item.index], item.visual
    visual_sha256 = ""
    if visual is not None and visual.part is not None:
        visual_sha256 = parts[visual.part].blob.digest
    elif visual is not None:
        writer = batch.blobs.stage()
        writer.write(visual.data)
        staged = writer.finish()
        result.blobs.append(staged)
        visual_sha256 = staged.digest
    return ToMake(
        dossier_id=dossier.id,
        filename=part.filename,
        media_type=part.media_type,
        blob_sha256=part.blob.digest,
        size=part.blob.size,
        outcome=item.outcome,
        facts=item.found.facts,
        text=item.found.text,
        visual_sha256=visual_sha256,
        visual_filename=visual.filename if visual is not None else "",
    )
