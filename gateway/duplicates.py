"""Finding the earlier document a new one repeats, in the same dossier (the rules stage's I/O).

Three ways to be the same invoice: the same bytes; the same identity (supplier, number and
type, `rules.dedupe`), which catches a Factur-X after its XML or a re-export; and a plain PDF
whose text shows an earlier structured document's number and supplier VAT, which catches an
e-FFF's PDF sent on its own after the e-FFF. A duplicate is kept and shown, linked to the
first (the original, never to another duplicate), and never delivered.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from gateway.rules.bundle import pdf_shows
from gateway.store.models import Document

# How many recent structured documents a plain PDF's text is compared with.
RECENT_STRUCTURED = 500


def mark_duplicate(session: Session, doc: Document, text: str = "") -> None:
    checks: list[tuple[ColumnElement[bool], str]] = [
        (Document.blob_sha256 == doc.blob_sha256, "same file")
    ]
    if doc.dedupe_key:
        checks.append((Document.dedupe_key == doc.dedupe_key, "same supplier, number and type"))
    for condition, why in checks:
        found = select(Document).where(*_originals(doc), condition).order_by(Document.id)
        first = session.scalars(found).first()
        if first is not None:
            _link(doc, first, why)
            return
    if text and doc.facts.get("syntax") == "pdf":
        shown = _shown_invoice(session, doc, text)
        if shown is not None:
            _link(doc, shown, "the PDF of it: its number and supplier VAT are in the text")


def _shown_invoice(session: Session, doc: Document, text: str) -> Document | None:
    recent = session.scalars(
        select(Document)
        .where(*_originals(doc), Document.dedupe_key != "")
        .order_by(Document.id.desc())
        .limit(RECENT_STRUCTURED)
    )
    for candidate in recent:
        supplier = candidate.facts.get("supplier") or {}
        ids = [str(supplier.get(key, "")) for key in ("vat", "company_number")]
        if pdf_shows(text, str(candidate.facts.get("number", "")), ids):
            return candidate
    return None


def _originals(doc: Document) -> tuple[ColumnElement[bool], ...]:
    """Earlier documents of the same dossier that are not duplicates themselves."""
    return (Document.dossier_id == doc.dossier.id, Document.duplicate_of_id.is_(None))


def _link(doc: Document, first: Document, why: str) -> None:
    doc.duplicate_of_id = first.id
    note = f"duplicate of document {first.id} ({why})"
    doc.status_reason = f"{note}; {doc.status_reason}" if doc.status_reason else note
