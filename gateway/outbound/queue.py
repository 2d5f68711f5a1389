"""The delivery queue: enqueue, claim with a lease, and the only legal status transitions.

A claim is a compare-and-set on the delivery's attempt id, committed before the first byte
leaves, so two workers (or two instances on PostgreSQL, with SKIP LOCKED) never send the same
document at once; an expired lease makes a crashed attempt claimable again, and the adapters'
"same bytes already there" check turns that retry into a no-op.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.outbound.base import DeliveryError, PermanentError, RejectedError
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    Document,
    Dossier,
    Event,
    utcnow,
)

TRANSITIONS: dict[DocStatus, set[DocStatus]] = {
    DocStatus.INBOX: {DocStatus.SENT, DocStatus.FAILED, DocStatus.REJECTED},
    DocStatus.FAILED: {DocStatus.SENT, DocStatus.FAILED, DocStatus.REJECTED},
    DocStatus.SENT: set(),
    DocStatus.REJECTED: set(),
}
PENDING = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)


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


def enqueue(session: Session, doc: Document, settings: DeliverySettings) -> Delivery:
    """Queue `doc` for its dossier's integration, or requeue a failed delivery of it."""
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
    elif delivery.state in PENDING:
        return delivery
    elif delivery.state is DeliveryState.FAILED:
        delivery.state = DeliveryState.QUEUED
        delivery.next_attempt_at = now
        delivery.expires_at = expires
    else:
        raise NotSendable(f"document {doc.id}: delivery {delivery.id} is {delivery.state}")
    session.flush()
    _event(session, "delivery_queued", delivery)
    return delivery


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt_id: str


def claim(session: Session, lease: float, limit: int) -> list[Claim]:
    """Take up to `limit` due deliveries for this worker; the caller commits."""
    now = utcnow()
    due = or_(
        (Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]))
        & (Delivery.next_attempt_at <= now),
        (Delivery.state == DeliveryState.SENDING) & (Delivery.lease_until < now),
    )
    rows = session.execute(
        select(Delivery.id, Delivery.attempt_id)
        .where(due)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claims = []
    for delivery_id, old_attempt in rows:
        attempt = str(uuid.uuid4())
        taken = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id, Delivery.attempt_id.is_not_distinct_from(old_attempt)
            )
            .values(
                state=DeliveryState.SENDING,
                attempt_id=attempt,
                lease_until=now + timedelta(seconds=lease),
                updated_at=now,
            )
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            claims.append(Claim(delivery_id, attempt))
    return claims


def release(session: Session, claim: Claim) -> None:
    """Give an interrupted attempt back to the queue at once instead of after its lease."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == claim.delivery_id, Delivery.attempt_id == claim.attempt_id)
        .values(state=DeliveryState.QUEUED, lease_until=None)
    )


def complete(session: Session, claim: Claim, remote_ref: str) -> None:
    delivery = session.get_one(Delivery, claim.delivery_id)
    delivery.state = DeliveryState.SENT
    delivery.attempts += 1
    delivery.remote_ref = remote_ref
    delivery.last_error_code = delivery.last_error_text = ""
    delivery.lease_until = None
    delivery.updated_at = utcnow()
    set_status(delivery.document, DocStatus.SENT)
    _event(session, "delivered", delivery, remote_ref=remote_ref, attempt=claim.attempt_id)


def fail(session: Session, claim: Claim, error: DeliveryError, settings: DeliverySettings) -> None:
    """Record a failed attempt: retry later, fail for good, or mark rejected."""
    delivery = session.get_one(Delivery, claim.delivery_id)
    now = utcnow()
    delivery.attempts += 1
    delivery.last_error_code, delivery.last_error_text = error.code, error.text
    delivery.lease_until = None
    delivery.updated_at = now
    retry_at = now + timedelta(seconds=backoff(delivery.attempts, settings))
    if isinstance(error, RejectedError):
        delivery.state = DeliveryState.REJECTED
        set_status(delivery.document, DocStatus.REJECTED, f"{error.code}: {error.text}")
    elif isinstance(error, PermanentError) or _expired(delivery, retry_at):
        delivery.state = DeliveryState.FAILED
        set_status(delivery.document, DocStatus.FAILED, f"{error.code}: {error.text}")
    else:
        delivery.state = DeliveryState.DEFERRED
        delivery.next_attempt_at = retry_at
        reason = f"{error.code}: {error.text} (retrying at {retry_at:%Y-%m-%d %H:%M:%S}Z)"
        set_status(delivery.document, DocStatus.FAILED, reason)
    _event(
        session,
        "delivery_failed",
        delivery,
        code=error.code,
        text=error.text,
        attempt=claim.attempt_id,
        state=delivery.state.value,
    )


def backoff(attempts: int, settings: DeliverySettings) -> float:
    """Exponential with ±20% jitter, so a recovering package is not hit by a thundering herd."""
    base = min(settings.retry_max, settings.retry_initial * 2 ** max(attempts - 1, 0))
    return float(base * random.uniform(0.8, 1.2))


def _expired(delivery: Delivery, retry_at: datetime) -> bool:
    return delivery.expires_at is not None and retry_at > delivery.expires_at


def _event(session: Session, kind: str, delivery: Delivery, **detail: str) -> None:
    session.add(
        Event(
            kind=kind,
            document_id=delivery.document_id,
            delivery_id=delivery.id,
            detail={"integration_id": delivery.integration_id, **detail},
        )
    )


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
    _event(session, f"delivery_{action}", delivery)
