"""The one door every intake goes through: store the raw message durably, then commit its row.

Only after `accept_message` returns may a door acknowledge (SMTP 250, IMAP post-action, folder
move). Taking the same message twice (same source, Message-ID and bytes) returns the first row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.intake import mime
from gateway.store.db import Store
from gateway.store.models import Event, Message


@dataclass(frozen=True)
class Envelope:
    source: str
    mail_from: str
    recipients: list[str]


@dataclass(frozen=True)
class Accepted:
    message_id: int
    duplicate: bool


def accept_message(store: Store, raw: bytes, envelope: Envelope) -> Accepted:
    """Make `raw` durable and recorded; blocking (fsync), so call it from a thread."""
    head = mime.headers(mime.parse(raw, headers_only=True))
    digest = store.blobs.put(raw)
    key = hashlib.sha256(f"{envelope.source}\0{head.message_id}\0{digest}".encode()).hexdigest()
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
    )
    try:
        with store.session.begin() as session:
            session.add(row)
            session.flush()
            session.add(
                Event(kind="message_accepted", message_id=row.id, detail={"size": len(raw)})
            )
    except IntegrityError:
        with store.session() as session:
            first = session.scalars(select(Message.id).where(Message.intake_key == key)).first()
        if first is None:
            raise
        return Accepted(first, duplicate=True)
    return Accepted(row.id, duplicate=False)
