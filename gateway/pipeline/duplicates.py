"""Finding the earlier document a new one repeats, in the same dossier (the rules stage's I/O).

Three ways to be the same invoice: the same bytes; the same identity (supplier, number and
type, `rules.dedupe`), which catches a Factur-X after its XML or a re-export; and a plain PDF
whose text shows an earlier structured document's number and supplier VAT, which catches an
e-FFF's PDF sent on its own after the e-FFF. A duplicate is kept and shown, linked to the
first (the original, never to another duplicate), and never delivered.

The rules stage checks a whole batch of new documents at once: one query finds the stored
originals any of them repeats, and a document may also repeat one before it in the batch,
which has no id until the batch is inserted (`Original.earlier`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from gateway.rules.bundle import pdf_shows
from gateway.store.models import Document

# How many recent structured documents a plain PDF's text is compared with.
RECENT_STRUCTURED = 500
# Read through the connection with statements built once: the check runs for every batch,
# and building a statement and going through the ORM cost more than the query.
_DOCS = cast(Table, Document.__table__)
# Earlier documents of these dossiers that are not duplicates themselves.
_ORIGINALS = (
    _DOCS.c.dossier_id.in_(bindparam("dossiers", expanding=True)),
    _DOCS.c.duplicate_of_id.is_(None),
)
# Each side of the OR names the dossier with its own column, so that each can use its index
# (dossier, file) or (dossier, identity): with the dossier outside the OR, SQLite reads every
# document of the dossier for every batch.
_MATCHES = (
    select(_DOCS.c.id, _DOCS.c.dossier_id, _DOCS.c.blob_sha256, _DOCS.c.dedupe_key)
    .where(
        _DOCS.c.duplicate_of_id.is_(None),
        or_(
            and_(
                _DOCS.c.dossier_id.in_(bindparam("dossiers", expanding=True)),
                _DOCS.c.blob_sha256.in_(bindparam("blobs", expanding=True)),
            ),
            and_(
                _DOCS.c.dossier_id.in_(bindparam("dossiers", expanding=True)),
                _DOCS.c.dedupe_key.in_(bindparam("keys", expanding=True)),
            ),
        ),
    )
    .order_by(_DOCS.c.id)
)
_RECENT = (
    select(_DOCS.c.id, _DOCS.c.facts)
    .where(*_ORIGINALS, _DOCS.c.dedupe_key != "")
    .order_by(_DOCS.c.id.desc())
    .limit(RECENT_STRUCTURED)
)
SAME_FILE = "same file"
SAME_IDENTITY = "same supplier, number and type"
SHOWN = "the PDF of it: its number and supplier VAT are in the text"


@dataclass(frozen=True)
class NewDocument:
    """What the check needs of a document not stored yet. `text` is a plain PDF's text."""

    dossier_id: int
    blob_sha256: str
    dedupe_key: str
    facts: dict[str, Any] = field(repr=False)
    text: str = field(default="", repr=False)


@dataclass(frozen=True)
class Original:
    """The original a new document repeats: a stored document (`id`), or the one at index
    `earlier` of the same batch; `why` says how they are the same."""

    why: str
    id: int | None = None
    earlier: int | None = None

    def note(self, first: int) -> str:
        return f"duplicate of document {first} ({self.why})"


@dataclass(frozen=True)
class _Stored:
    id: int
    dossier_id: int
    blob_sha256: str
    dedupe_key: str


def find_originals(session: Session, docs: Sequence[NewDocument]) -> list[Original | None]:
    """For each of `docs`, in order, the original it repeats or None: the same file first,
    else the same identity, else (a plain PDF) the structured document its text shows."""
    firsts = _Firsts()
    for stored in _stored_matches(session, docs):
        firsts.add(stored.dossier_id, stored.blob_sha256, stored.dedupe_key, stored.id)
    found: list[Original | None] = []
    recent: dict[int, list[tuple[Original, dict[str, Any]]]] = {}
    for index, doc in enumerate(docs):
        original = firsts.same(doc)
        if original is None and doc.text and doc.facts.get("syntax") == "pdf":
            candidates = _recent(session, doc.dossier_id, recent) + [
                (Original(SHOWN, earlier=i), d.facts)
                for i, d in enumerate(docs[:index])
                if found[i] is None and d.dossier_id == doc.dossier_id and d.dedupe_key
            ]
            original = _shown(doc.text, reversed(candidates[-RECENT_STRUCTURED:]))
        found.append(original)
        if original is None:
            firsts.add(doc.dossier_id, doc.blob_sha256, doc.dedupe_key, -1 - index)
    return found


def mark_duplicate(session: Session, doc: Document, text: str = "") -> None:
    """Link the unsaved `doc` to the stored original it repeats, if any."""
    new = NewDocument(doc.dossier.id, doc.blob_sha256, doc.dedupe_key, doc.facts, text)
    original = find_originals(session, [new])[0]
    if original is not None and original.id is not None:
        doc.duplicate_of_id = original.id
        doc.status_reason = join_reason(original.note(original.id), doc.status_reason)


def join_reason(note: str, status_reason: str | None) -> str:
    return f"{note}; {status_reason}" if status_reason else note


def _stored_matches(session: Session, docs: Sequence[NewDocument]) -> list[_Stored]:
    """Stored originals with the file or the identity of one of `docs`, oldest first; one
    query reading ids only, as this runs for every batch."""
    if not docs:
        return []
    values = {
        "dossiers": list({doc.dossier_id for doc in docs}),
        "blobs": list({doc.blob_sha256 for doc in docs}),
        "keys": list({doc.dedupe_key for doc in docs if doc.dedupe_key}),
    }
    return [_Stored(*row) for row in session.connection().execute(_MATCHES, values)]


class _Firsts:
    """The first original seen per file and per identity of each dossier: stored ones first,
    by id, then the batch's own originals (negative ids: `-1 - index`) as they come. A lookup
    per document, where comparing each with every candidate made a batch quadratic."""

    def __init__(self) -> None:
        self.by_file: dict[tuple[int, str], int] = {}
        self.by_identity: dict[tuple[int, str], int] = {}

    def add(self, dossier_id: int, blob_sha256: str, dedupe_key: str, ref: int) -> None:
        self.by_file.setdefault((dossier_id, blob_sha256), ref)
        if dedupe_key:
            self.by_identity.setdefault((dossier_id, dedupe_key), ref)

    def same(self, doc: NewDocument) -> Original | None:
        ref = self.by_file.get((doc.dossier_id, doc.blob_sha256))
        why = SAME_FILE
        if ref is None and doc.dedupe_key:
            ref = self.by_identity.get((doc.dossier_id, doc.dedupe_key))
            why = SAME_IDENTITY
        if ref is None:
            return None
        return Original(why, id=ref) if ref >= 0 else Original(why, earlier=-1 - ref)


def _recent(
    session: Session, dossier_id: int, cache: dict[int, list[tuple[Original, dict[str, Any]]]]
) -> list[tuple[Original, dict[str, Any]]]:
    """The dossier's recent stored structured originals, oldest first (read once a batch)."""
    if dossier_id not in cache:
        rows = session.connection().execute(_RECENT, {"dossiers": [dossier_id]}).all()
        cache[dossier_id] = [(Original(SHOWN, id=row.id), row.facts) for row in reversed(rows)]
    return cache[dossier_id]


def _shown(text: str, newest_first: Iterable[tuple[Original, dict[str, Any]]]) -> Original | None:
    for original, facts in newest_first:
        supplier = facts.get("supplier") or {}
        ids = [str(supplier.get(key, "")) for key in ("vat", "company_number")]
        if pdf_shows(text, str(facts.get("number", "")), ids):
            return original
    return None
