"""The one door every intake goes through: store the raw message durably, then commit its row.

Only after `accept_message` returns may a door acknowledge (SMTP 250, IMAP post-action, folder
removal). The same raw message (same Message-ID and bytes) for the same dossiers is stored once,
whichever door it came through: a second arrival returns the first row, so a client retrying
after a lost 250, an IMAP re-scan and a file dropped twice all end in one message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import metrics
from gateway.intake import mime
from gateway.store.db import Store
from gateway.store.models import Event, Message, utcnow

HINTS = ("purchase", "sales", "bank", "other")


@dataclass(frozen=True)
class Route:
    """One dossier a message is for, with the document-type hint its address carried."""

    dossier: str
    hint: str = ""


@dataclass(frozen=True)
class Envelope:
    source: str
    mail_from: str
    recipients: list[str]
    routes: list[Route] = field(default_factory=list)
    source_ref: str = ""


@dataclass(frozen=True)
class Accepted:
    message_id: int
    duplicate: bool


# Called inside the storing transaction with the message's id (IMAP records its UID there).
Recorder = Callable[[Session, int], None]


def intake_key(message_id: str, digest: str, routes: list[Route]) -> str:
    dossiers = ",".join(sorted({r.dossier for r in routes}))
    return hashlib.sha256(f"{message_id}\0{digest}\0{dossiers}".encode()).hexdigest()


def accept_message(
    store: Store,
    raw: bytes,
    envelope: Envelope,
    *,
    quarantine: str = "",
    auth: dict[str, Any] | None = None,
    record: Recorder | None = None,
) -> Accepted:
    """Make `raw` durable and recorded; blocking (fsync), so call it from a thread.

    With `quarantine` the message is kept aside with that reason instead of being processed:
    the doors that cannot refuse (IMAP, folder) use it for senders their dossier does not allow.
    """
    started = time.monotonic()
    head = mime.headers(mime.parse(raw, headers_only=True))
    digest = store.blobs.put(raw)
    key = intake_key(head.message_id, digest, envelope.routes)
    row = Message(
        source=envelope.source,
        intake_key=key,
        mail_from=envelope.mail_from,
        recipients=envelope.recipients,
        header_from=head.header_from,
        message_id=head.message_id,
        subject=head.subject,
        raw_sha256=digest,
        size=len(raw),
        source_ref=envelope.source_ref,
        routes=[{"dossier": r.dossier, "hint": r.hint} for r in envelope.routes],
        auth=auth or {},
    )
    if quarantine:
        row.verdict = "quarantined"
        row.reason = quarantine
        row.processed_at = utcnow()
    try:
        with store.session.begin() as session:
            session.add(row)
            session.flush()
            detail = {"size": len(raw), "source": envelope.source}
            kind = "message_quarantined" if quarantine else "message_accepted"
            session.add(Event(kind=kind, message_id=row.id, detail=detail | _why(quarantine)))
            if record is not None:
                record(session, row.id)
    except IntegrityError:
        return _first(store, key, record)
    metrics.MESSAGES_RECEIVED.labels(envelope.source).inc()
    metrics.INTAKE_SECONDS.labels(envelope.source).observe(time.monotonic() - started)
    return Accepted(row.id, duplicate=False)


def _why(quarantine: str) -> dict[str, str]:
    return {"reason": quarantine} if quarantine else {}


def _first(store: Store, key: str, record: Recorder | None) -> Accepted:
    with store.session.begin() as session:
        first = session.scalars(select(Message.id).where(Message.intake_key == key)).first()
        if first is None:
            raise LookupError(f"intake key {key} collided but no message has it")
        if record is not None:
            record(session, first)
    return Accepted(first, duplicate=True)
