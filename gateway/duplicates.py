"""Finding the earlier document a new one repeats, in the same dossier (the rules stage's I/O).

Three ways to be the same invoice: the same bytes; the same identity (supplier, number and
type, `rules.dedupe`), which catches a Factur-X after its XML or a re-export; and a plain PDF
whose text shows an earlier structured document's number and supplier VAT, which catches an
e-FFF's PDF sent on its own after the e-FFF. A duplicate is kept and shown, linked to the
first (the original, never to another duplicate), and never delivered.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from gateway.rules.bundle import pdf_shows
from gateway.store.models import Document

# How many recent structured documents a plain PDF's text is compared with.
RECENT_STRUCTURED = 500


def mark_duplicate(session: Session, doc: Document, text: str = "") -> None:
    """Link `doc` to the earlier original it repeats: the same file first, else the same
    identity, else (a plain PDF) the structured document its text shows. One query answers
    the first two, reading ids only: this runs for every new document."""
    same_file = Document.blob_sha256 == doc.blob_sha256
    wanted = or_(same_file, Document.dedupe_key == doc.dedupe_key) if doc.dedupe_key else same_file
    found = session.execute(
        select(Document.id, Document.blob_sha256)
        .where(*_originals(doc), wanted)
        .order_by(Document.id)
    ).all()
    by_file = [row.id for row in found if row.blob_sha256 == doc.blob_sha256]
    if by_file:
        _link(doc, by_file[0], "same file")
    elif found:
        _link(doc, found[0].id, "same supplier, number and type")
    elif text and doc.facts.get("syntax") == "pdf":
        shown = _shown_invoice(session, doc, text)
        if shown is not None:
            _link(doc, shown.id, "the PDF of it: its number and supplier VAT are in the text")


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


def _link(doc: Document, first: int, why: str) -> None:
    doc.duplicate_of_id = first
    note = f"duplicate of document {first} ({why})"
    doc.status_reason = f"{note}; {doc.status_reason}" if doc.status_reason else note
