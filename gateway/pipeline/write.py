"""The rules stage's last step: a batch's decisions written as rows, a few statements for all.

An object and a unit-of-work flush per document, per delivery and per event cost more than
recognising the document. Here the rows of the whole batch are built as plain values, then
written with one multi-row insert per table: documents, deliveries, events; one query checks
the batch for duplicates (`duplicates.find_originals`). The documents' ids come back with the
columns that tell the rows apart (`_KEY`), not in parameter order: asking for that order
makes SQLite's dialect insert one row per statement.
A document that repeats one made earlier in the same batch learns its original's id only
after the insert, and is updated then; that is rare.

This writes everything or raises: the runner rolls the batch back and writes it again a
message at a time, so that a message that fails alone is set aside alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, cast

import structlog
from sqlalchemy import Connection, Table, bindparam, insert, update
from sqlalchemy.orm import Session
from structlog.typing import FilteringBoundLogger

from gateway.config import DeliverySettings
from gateway.filenames import safe_filename
from gateway.outbound.enqueue import enqueue_new
from gateway.pipeline.duplicates import NewDocument, Original, find_originals, join_reason
from gateway.pipeline.prepare import Prepared, ToMake
from gateway.pipeline.rows import DossierRow
from gateway.rules.dedupe import dedupe_key
from gateway.rules.policy import Outcome
from gateway.store.models import DocStatus, Document, Event, Message, utcnow

log = structlog.get_logger(__name__)

_DOCUMENTS = cast(Table, Document.__table__)
_EVENTS = cast(Table, Event.__table__)
_MESSAGES = cast(Table, Message.__table__)
# What tells a batch's documents apart; rows equal in all of it are equal in everything the
# batch sets, so which of them gets which id only has to follow the order they were inserted.
_KEY = ("message_id", "dossier_id", "blob_sha256", "filename")
_INSERT_DOCUMENTS = insert(_DOCUMENTS).returning(
    _DOCUMENTS.c.id, *(_DOCUMENTS.c[name] for name in _KEY)
)
_INSERT_EVENTS = insert(_EVENTS)
_LINK = (
    update(_DOCUMENTS)
    .where(_DOCUMENTS.c.id == bindparam("b_id"))
    .values(duplicate_of_id=bindparam("b_first"), status_reason=bindparam("b_reason"))
)
_SET_REASON = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("b_id"))
    .values(reason=bindparam("b_reason"))
)
_SET_VERDICT = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("b_id"))
    .values(
        verdict=bindparam("b_verdict"), reason=bindparam("b_reason"), processed_at=bindparam("b_at")
    )
)


@dataclass
class _Doc:
    message_id: int
    dossier: DossierRow
    make: ToMake
    row: dict[str, Any]
    id: int = 0


@dataclass
class _Rows:
    """What the batch writes, in the order its events are recorded."""

    now: datetime
    docs: list[_Doc] = field(default_factory=list)
    # Per message: events before its documents', and the indexes of its documents.
    messages: list[tuple[list[dict[str, Any]], range]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    # Logged once the rows are written: a batch written again a message at a time logs once.
    logs: list[Callable[[], None]] = field(default_factory=list)


def write_batch(
    session: Session,
    items: Sequence[Prepared],
    dossiers: dict[int, DossierRow],
    settings: DeliverySettings,
) -> int:
    """Write the rows of `items`, whose messages the caller has claimed; returns how many
    deliveries were queued."""
    rows = _Rows(utcnow())
    for item in items:
        _message(rows, item, dossiers)
    connection = session.connection()
    _insert_documents(session, connection, rows.docs)
    wanted = [(d.id, target) for d in rows.docs if (target := _auto_send_to(d)) is not None]
    names = {
        d.integration_id: d.integration_name
        for d in dossiers.values()
        if d.integration_id is not None
    }
    queued = {
        event["document_id"]: event
        for event in enqueue_new(connection, wanted, settings, rows.now, names)
    }
    events = []
    for first, indexes in rows.messages:
        events += first
        for doc in (rows.docs[i] for i in indexes):
            events.append(_created(doc, rows.now))
            if doc.id in queued:
                events.append(queued[doc.id])
    if events:
        connection.execute(_INSERT_EVENTS, events)
    if rows.verdicts:
        connection.execute(_SET_VERDICT, rows.verdicts)
    if rows.reasons:
        connection.execute(_SET_REASON, rows.reasons)
    for say in rows.logs:
        say()
    # Bound once for the batch: the module's logger looks up its configuration at every call.
    logger = log.bind()
    for doc in rows.docs:
        _log_created(logger, doc)
    return len(wanted)


def shunt(session: Session, message_id: int, reason: str) -> None:
    """Set a message aside with the reason it failed (Mailman's "shunt")."""
    rows = _Rows(utcnow())
    event = _shunted(rows, message_id, reason)
    connection = session.connection()
    connection.execute(_INSERT_EVENTS, [event])
    connection.execute(_SET_VERDICT, rows.verdicts)


def _message(rows: _Rows, item: Prepared, dossiers: dict[int, DossierRow]) -> None:
    first: list[dict[str, Any]] = []
    start = len(rows.docs)
    if item.failure:
        rows.logs.append(
            partial(log.error, "pipeline_shunted", message=item.message_id, reason=item.failure)
        )
        first.append(_shunted(rows, item.message_id, item.failure))
    elif item.quarantine:
        first.append(_quarantined(rows, item.message_id, item.quarantine))
    else:
        if item.skipped:
            first.append(
                _event(rows.now, "parts_skipped", item.message_id, {"parts": item.skipped})
            )
        for make in item.documents:
            dossier = dossiers[make.dossier_id]
            rows.docs.append(
                _Doc(item.message_id, dossier, make, _document(item, dossier, make, rows.now))
            )
        reason = _message_reason(item)
        if reason:
            rows.reasons.append({"b_id": item.message_id, "b_reason": reason})
    rows.messages.append((first, range(start, len(rows.docs))))


def _message_reason(item: Prepared) -> str:
    if not item.dossier_ids:
        return "no dossier owns any of the recipients any more"
    if not item.parts:
        return "no documents in this message"
    return ""


def _document(item: Prepared, dossier: DossierRow, make: ToMake, now: datetime) -> dict[str, Any]:
    outcome = make.outcome
    archived, status_reason = _hold(outcome)
    return {
        "dossier_id": dossier.id,
        "message_id": item.message_id,
        "filename": make.filename,
        "media_type": make.media_type,
        "blob_sha256": make.blob_sha256,
        "size": make.size,
        "doc_type": outcome.doc_type,
        "reason": outcome.reason,
        "facts": make.facts,
        "duplicate_of_id": None,
        "status": DocStatus.INBOX,
        "status_reason": status_reason,
        "archived": archived,
        "created_at": now,
        "sent_at": None,
        "visual_sha256": make.visual_sha256 or None,
        "visual_filename": (
            safe_filename(make.visual_filename, fallback="visual.pdf") if make.visual_sha256 else ""
        ),
        "dedupe_key": dedupe_key(outcome.doc_type, make.facts),
        "matched_rules": outcome.matched,
    }


def _hold(outcome: Outcome) -> tuple[bool, str]:
    """A dropped document is kept (archived) and a quarantined one waits; both say by which rule."""
    if outcome.dropped:
        return True, f"dropped by rule {outcome.dropped}"
    if outcome.quarantined:
        return False, f"quarantined by rule {outcome.quarantined}"
    return False, ""


def _insert_documents(session: Session, connection: Connection, docs: list[_Doc]) -> None:
    """Insert the documents linked to the originals they repeat."""
    if not docs:
        return
    originals = find_originals(
        session,
        [
            NewDocument(
                d.dossier.id, d.make.blob_sha256, d.row["dedupe_key"], d.make.facts, d.make.text
            )
            for d in docs
        ],
    )
    for doc, original in zip(docs, originals, strict=True):
        if original is not None and original.id is not None:
            _link(doc, original, original.id)
    _set_ids(connection, docs)
    later = []
    for doc, original in zip(docs, originals, strict=True):
        if original is not None and original.earlier is not None:
            _link(doc, original, docs[original.earlier].id)
            reason = doc.row["status_reason"]
            later.append(
                {"b_id": doc.id, "b_first": doc.row["duplicate_of_id"], "b_reason": reason}
            )
    if later:
        connection.execute(_LINK, later)


def _set_ids(connection: Connection, docs: list[_Doc]) -> None:
    """Insert `docs` and give each its new id: rows with the same `_KEY` take theirs in
    ascending order, the order both databases number the rows of one INSERT in."""
    ids: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row in connection.execute(_INSERT_DOCUMENTS, [doc.row for doc in docs]):
        ids[tuple(row[1:])].append(row[0])
    for same in ids.values():
        same.sort(reverse=True)
    for doc in docs:
        doc.id = ids[tuple(doc.row[name] for name in _KEY)].pop()


def _link(doc: _Doc, original: Original, first: int) -> None:
    doc.row["duplicate_of_id"] = first
    doc.row["status_reason"] = join_reason(original.note(first), doc.row["status_reason"])


def _auto_send_to(doc: _Doc) -> int | None:
    """The integration auto-send queues `doc` for: it takes only what a person would send
    without a second look."""
    dossier, row = doc.dossier, doc.row
    sendable = (
        doc.make.outcome.auto_send
        and dossier.auto_send
        and row["doc_type"] is not None
        and row["duplicate_of_id"] is None
    )
    return dossier.integration_id if sendable else None


def _created(doc: _Doc, now: datetime) -> dict[str, Any]:
    row = doc.row
    detail = {
        "type": row["doc_type"].value if row["doc_type"] else None,
        "reason": row["reason"],
        "visual": row["visual_filename"],
        "duplicate_of": row["duplicate_of_id"],
        "rules": [entry["rule"] for entry in doc.make.outcome.matched],
    }
    event = _event(now, "document_created", doc.message_id, detail)
    event["document_id"] = doc.id
    return event


def _log_created(logger: FilteringBoundLogger, doc: _Doc) -> None:
    row = doc.row
    logger.info(
        "document_created",
        doc=doc.id,
        message=doc.message_id,
        dossier=doc.dossier.slug,
        type=row["doc_type"].value if row["doc_type"] else "unrecognised",
        reason=row["reason"],
        duplicate_of=row["duplicate_of_id"],
    )


def _shunted(rows: _Rows, message_id: int, reason: str) -> dict[str, Any]:
    rows.verdicts.append(
        {"b_id": message_id, "b_verdict": "failed", "b_reason": reason, "b_at": rows.now}
    )
    return _event(rows.now, "message_shunted", message_id, {"reason": reason})


def _quarantined(rows: _Rows, message_id: int, reason: str) -> dict[str, Any]:
    """Kept whole and aside: visible with `gateway quarantine list`, never silently lost."""
    rows.logs.append(partial(log.warning, "message_quarantined", message=message_id, reason=reason))
    rows.verdicts.append(
        {"b_id": message_id, "b_verdict": "quarantined", "b_reason": reason, "b_at": rows.now}
    )
    return _event(rows.now, "message_quarantined", message_id, {"reason": reason})


def _event(now: datetime, kind: str, message_id: int, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": now,
        "kind": kind,
        "message_id": message_id,
        "document_id": None,
        "delivery_id": None,
        "detail": detail,
    }
