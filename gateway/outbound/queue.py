"""The delivery queue: what may be sent, enqueue, the only legal status transitions, and the
operator's moves. How a queued delivery is attempted is `attempts`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    Document,
    Dossier,
    Event,
    Integration,
    utcnow,
)

TRANSITIONS: dict[DocStatus, set[DocStatus]] = {
    DocStatus.INBOX: {DocStatus.SENT, DocStatus.FAILED, DocStatus.REJECTED},
    DocStatus.FAILED: {DocStatus.SENT, DocStatus.FAILED, DocStatus.REJECTED},
    DocStatus.SENT: set(),
    DocStatus.REJECTED: set(),
}
PENDING = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)
# session.info key: integration id → name, for the events of a session's deliveries.
INTEGRATION_NAMES = "integration_names"


class NotSendable(Exception):
    """Why a document cannot be (re)sent; the message is for the accountant."""


def set_status(doc: Document, status: DocStatus, reason: str = "") -> None:
    if status not in TRANSITIONS[doc.status]:
        raise NotSendable(f"document {doc.id} cannot go from {doc.status} to {status}")
    doc.status = status
    doc.status_reason = reason
    if status is DocStatus.SENT:
        doc.sent_at = utcnow()


def sendable_problem(doc: Document, dossier: Dossier) -> str | None:
    if doc.status is DocStatus.SENT:
        return (
            f"document {doc.id} was already sent at {doc.sent_at:%Y-%m-%d %H:%M:%S}Z;"
            " a sent document is never sent again"
        )
    if doc.status is DocStatus.REJECTED:
        return f"document {doc.id} was rejected by the package: {doc.status_reason}"
    if doc.doc_type is None:
        return f"document {doc.id} has no type ({doc.reason}); assign one before sending"
    if doc.duplicate_of_id is not None:
        return f"document {doc.id} duplicates document {doc.duplicate_of_id}"
    if dossier.integration_id is None:
        return f"dossier {dossier.slug} is bound to no integration"
    return None


def enqueue(
    session: Session, doc: Document, settings: DeliverySettings, now_please: bool = False
) -> Delivery:
    """Queue `doc` for its dossier's integration, or requeue a failed delivery of it.

    A delivery already waiting is left alone, unless `now_please` (a manual retry) pulls a
    deferred one forward and gives it a fresh lifetime.
    """
    problem = sendable_problem(doc, doc.dossier)
    if problem:
        raise NotSendable(problem)
    assert doc.dossier.integration_id is not None
    delivery = session.scalars(
        select(Delivery).where(
            Delivery.document_id == doc.id,
            Delivery.integration_id == doc.dossier.integration_id,
        )
    ).one_or_none()
    now = utcnow()
    expires = now + timedelta(seconds=settings.lifetime)
    if delivery is None:
        delivery = Delivery(
            document_id=doc.id, integration_id=doc.dossier.integration_id, expires_at=expires
        )
        session.add(delivery)
    elif delivery.state is DeliveryState.DEFERRED and now_please:
        delivery.next_attempt_at = now
        delivery.expires_at = expires
    elif delivery.state in PENDING:
        return delivery
    elif delivery.state is DeliveryState.FAILED:
        delivery.state = DeliveryState.QUEUED
        delivery.next_attempt_at = now
        delivery.expires_at = expires
    else:
        raise NotSendable(f"document {doc.id}: delivery {delivery.id} is {delivery.state}")
    session.flush()
    delivery_event(session, "delivery_queued", delivery)
    return delivery


def send(session: Session, doc: Document, settings: DeliverySettings) -> Delivery:
    """Queue an Inbox document (by hand or by auto-send); other statuses say what to do."""
    if doc.status is DocStatus.FAILED:
        raise NotSendable(
            f"document {doc.id} failed ({doc.status_reason}); use `gateway doc retry {doc.id}`"
        )
    return enqueue(session, doc, settings)


def retry(session: Session, doc: Document, settings: DeliverySettings) -> Delivery:
    """Send a failed document again now, whether it failed for good or waits for a retry."""
    if doc.status is not DocStatus.FAILED:
        raise NotSendable(
            f"document {doc.id} is {doc.status.value}; only failed documents are retried"
        )
    return enqueue(session, doc, settings, now_please=True)


def archive(session: Session, doc: Document) -> bool:
    """Move a sent document out of the accountant's way; False when it already was."""
    if doc.status is not DocStatus.SENT:
        raise NotSendable(
            f"document {doc.id} is {doc.status.value}; only sent documents can be archived"
        )
    if doc.archived:
        return False
    doc.archived = True
    session.add(Event(kind="document_archived", document_id=doc.id, detail={}))
    return True


def delivery_event(session: Session, kind: str, delivery: Delivery, **detail: str) -> None:
    """One line of the delivery's history, naming its integration, in the caller's session."""
    session.add(
        Event(
            kind=kind,
            document_id=delivery.document_id,
            delivery_id=delivery.id,
            detail={**integration_detail(session, delivery.integration_id), **detail},
        )
    )


def integration_detail(session: Session, integration_id: int) -> dict[str, Any]:
    """Which integration an event is about, from `session.info` when the caller put the names
    there (the delivery runner reads them anyway), else from the database."""
    name = session.info.get(INTEGRATION_NAMES, {}).get(integration_id)
    if name is None:
        with session.no_autoflush:
            name = session.get_one(Integration, integration_id).name
    return {"integration_id": integration_id, "integration": name}


class OperatorRefused(NotSendable):
    """An operator command that does not apply to the delivery's current state."""


OPERATOR_MOVES: dict[str, tuple[set[DeliveryState], DeliveryState]] = {
    "hold": ({DeliveryState.QUEUED, DeliveryState.DEFERRED}, DeliveryState.HELD),
    "release": ({DeliveryState.HELD}, DeliveryState.QUEUED),
    "requeue": (
        {DeliveryState.DEFERRED, DeliveryState.HELD, DeliveryState.FAILED, DeliveryState.QUEUED},
        DeliveryState.QUEUED,
    ),
    "flush": ({DeliveryState.DEFERRED, DeliveryState.QUEUED}, DeliveryState.QUEUED),
}


def operate(session: Session, action: str, delivery: Delivery, settings: DeliverySettings) -> None:
    """postsuper-style moves: hold, release, requeue (also failed ones), flush (retry now).

    A delivery in `sending` is never touched: its worker owns it until the lease ends.
    """
    allowed, target = OPERATOR_MOVES[action]
    if delivery.state not in allowed:
        raise OperatorRefused(f"delivery {delivery.id} is {delivery.state}; cannot {action} it")
    now = utcnow()
    if delivery.state is DeliveryState.FAILED:
        delivery.expires_at = now + timedelta(seconds=settings.lifetime)
    delivery.state = target
    delivery.next_attempt_at = now
    delivery.updated_at = now
    delivery_event(session, f"delivery_{action}", delivery)
