"""The delivery queue: enqueue, claim with a lease, and the only legal status transitions.

A claim is a compare-and-set on the delivery's attempt id, committed before the first byte
leaves, so two workers (or two instances on PostgreSQL, with SKIP LOCKED) never send the same
document at once. Every later write is fenced by that attempt id: a worker whose lease expired
and was taken over cannot overwrite the new owner's result.

A delivery found in `sending` with an expired lease (a crash, a stalled worker) is *uncertain*:
the package may or may not have it. Its next claim says so, and the adapter reconciles instead
of sending blindly (SFTP and directory look for the final name, HTTP repeats the same
Idempotency-Key, mail resends with the same Message-ID and is logged as a possible duplicate).
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Select, Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.outbound.base import (
    UNCERTAIN_PREFIX,
    DeliveryError,
    PermanentError,
    RejectedError,
    TransientError,
    UncertainError,
)
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    Document,
    Dossier,
    Event,
    Integration,
    UTCDateTime,
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
    _event(session, "delivery_queued", delivery)
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


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt_id: str
    integration_id: int
    # The previous attempt was cut off while sending: the package may already have the document.
    uncertain: bool = False


def claim(
    session: Session,
    lease: float,
    limit: int,
    busy: Collection[int] = frozenset(),
    integration_id: int | None = None,
) -> list[Claim]:
    """Take up to `limit` due deliveries, skipping integrations in `busy` (or of the one
    `integration_id` only); the caller commits."""
    now = utcnow()
    values: dict[str, object] = {"b_now": now, "b_limit": limit}
    if busy:
        values["b_busy"] = list(busy)
    if integration_id is not None:
        values["b_integration"] = integration_id
    query = _due(bool(busy), integration_id is not None)
    rows = session.connection().execute(query, values).all()
    claims = []
    lease_until = now + timedelta(seconds=lease)
    for delivery_id, old_attempt, old_state, integration_id, last_code in rows:
        attempt = str(uuid.uuid4())
        taken = session.connection().execute(
            _TAKE,
            {
                "b_id": delivery_id,
                "b_old": old_attempt,
                "b_new": attempt,
                "b_lease": lease_until,
                "b_now": now,
            },
        )
        if taken.rowcount != 1:
            continue
        cut_off = old_state is DeliveryState.SENDING
        uncertain = cut_off or last_code.startswith(UNCERTAIN_PREFIX)
        claims.append(Claim(delivery_id, attempt, integration_id, uncertain))
        if cut_off:
            _event(
                session,
                "delivery_uncertain",
                session.get_one(Delivery, delivery_id),
                attempt=attempt,
                previous_attempt=old_attempt or "",
            )
    return claims


def renew(session: Session, claim: Claim, lease: float) -> bool:
    """Extend the lease of a long attempt; False when another worker has taken it over."""
    return _fence(session, claim, lease_until=utcnow() + timedelta(seconds=lease))


def release(session: Session, claim: Claim) -> None:
    """Give an interrupted attempt back to the queue at once instead of after its lease.

    Only for attempts stopped before anything could have left (a graceful shutdown cancels
    them); the next claim is therefore not uncertain.
    """
    _fence(session, claim, state=DeliveryState.QUEUED, lease_until=None)


def expire(session: Session, claim: Claim) -> None:
    """End an attempt stopped while handing over: claimable at once, and uncertain."""
    _fence(session, claim, lease_until=utcnow() - timedelta(seconds=1))


def complete(session: Session, claim: Claim, remote_ref: str) -> bool:
    """Record the package's acceptance; False (and an event) when the attempt was superseded."""
    return complete_many(session, [(claim, remote_ref)]) == [True]


def complete_many(session: Session, accepted: Sequence[tuple[Claim, str]]) -> list[bool]:
    """`complete` for several attempts at once, each fenced by its own attempt id.

    Plain statements rather than loaded objects, as this runs for every document delivered:
    one fenced UPDATE ... RETURNING per attempt, then one status update and one insert of
    events for all the attempts that were still ours.
    """
    now = utcnow()
    connection = session.connection()
    owned, documents, events = [], [], []
    for claim, remote_ref in accepted:
        row = connection.execute(
            _COMPLETE,
            {
                "b_id": claim.delivery_id,
                "b_attempt": claim.attempt_id,
                "b_ref": remote_ref,
                "b_now": now,
            },
        ).one_or_none()
        owned.append(row is not None)
        if row is None:
            _superseded(session, claim, "sent", remote_ref=remote_ref)
            continue
        document_id, attempts = row
        documents.append(document_id)
        extra = {"uncertain": "yes"} if claim.uncertain else {}
        detail = {"attempt": claim.attempt_id, "number": str(attempts), "outcome": "sent", **extra}
        events.append(
            {
                "at": now,
                "kind": "delivery_attempt",
                "document_id": document_id,
                "delivery_id": claim.delivery_id,
                "detail": {
                    **_integration_detail(session, claim.integration_id),
                    **detail,
                    "remote_ref": remote_ref,
                },
            }
        )
    if documents:
        sent = connection.execute(_MARK_SENT, {"b_docs": documents, "b_now": now})
        if sent.rowcount != len(documents):
            raise NotSendable(f"documents {documents} cannot all go to {DocStatus.SENT}")
        connection.execute(_EVENTS.insert(), events)
    return owned


def fail(session: Session, claim: Claim, error: DeliveryError, settings: DeliverySettings) -> bool:
    """Record a failed attempt: retry later, fail for good, or mark rejected.

    False (and an event) when the attempt was superseded: its outcome is then not ours to write.
    """
    if not _fence(session, claim, lease_until=None):
        _superseded(session, claim, "error", code=error.code, reason=error.text)
        return False
    delivery = session.get_one(Delivery, claim.delivery_id, populate_existing=True)
    now = utcnow()
    delivery.attempts += 1
    delivery.last_error_code, delivery.last_error_text = error.code, error.text
    delivery.updated_at = now
    wait = backoff(delivery.attempts, settings)
    if isinstance(error, TransientError) and error.retry_after is not None:
        wait = max(wait, min(error.retry_after, settings.retry_max))
    retry_at = now + timedelta(seconds=wait)
    reason = f"{error.code}: {error.text}"
    if isinstance(error, RejectedError):
        delivery.state = DeliveryState.REJECTED
        set_status(delivery.document, DocStatus.REJECTED, reason)
    elif isinstance(error, PermanentError) or _expired(delivery, retry_at):
        delivery.state = DeliveryState.FAILED
        set_status(delivery.document, DocStatus.FAILED, reason)
    else:
        delivery.state = DeliveryState.DEFERRED
        delivery.next_attempt_at = retry_at
        set_status(
            delivery.document,
            DocStatus.FAILED,
            f"{reason} (retrying at {retry_at:%Y-%m-%d %H:%M:%S}Z)",
        )
    outcome = delivery.state.value
    if isinstance(error, UncertainError) and delivery.state is DeliveryState.DEFERRED:
        outcome = "uncertain"
    _attempt_event(session, delivery, claim, outcome, code=error.code, reason=error.text)
    return True


def _fence(session: Session, claim: Claim, **values: object) -> bool:
    """Write `values` only while `claim` still owns the delivery; True when it did."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == claim.delivery_id,
            Delivery.attempt_id == claim.attempt_id,
            Delivery.state == DeliveryState.SENDING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _superseded(session: Session, claim: Claim, outcome: str, **detail: str) -> None:
    delivery = session.get_one(Delivery, claim.delivery_id)
    _event(
        session,
        "attempt_superseded",
        delivery,
        attempt=claim.attempt_id,
        outcome=outcome,
        **detail,
    )


def backoff(attempts: int, settings: DeliverySettings) -> float:
    """Exponential with ±20% jitter, so a recovering package is not hit by a thundering herd."""
    base = min(settings.retry_max, settings.retry_initial * 2 ** max(attempts - 1, 0))
    return float(base * random.uniform(0.8, 1.2))


def _expired(delivery: Delivery, retry_at: datetime) -> bool:
    return delivery.expires_at is not None and retry_at > delivery.expires_at


def _attempt_event(
    session: Session, delivery: Delivery, claim: Claim, outcome: str, **detail: str
) -> None:
    """Every attempt is one event: when (the row's time), where, how it ended, code and reason."""
    extra = {"uncertain": "yes"} if claim.uncertain else {}
    _event(
        session,
        "delivery_attempt",
        delivery,
        attempt=claim.attempt_id,
        number=str(delivery.attempts),
        outcome=outcome,
        **extra,
        **detail,
    )


def _event(session: Session, kind: str, delivery: Delivery, **detail: str) -> None:
    session.add(
        Event(
            kind=kind,
            document_id=delivery.document_id,
            delivery_id=delivery.id,
            detail={**_integration_detail(session, delivery.integration_id), **detail},
        )
    )


def _integration_detail(session: Session, integration_id: int) -> dict[str, Any]:
    """Which integration an event is about, from `session.info` when the caller put the names
    there (the delivery runner reads them anyway), else from the database."""
    name = session.info.get(INTEGRATION_NAMES, {}).get(integration_id)
    if name is None:
        with session.no_autoflush:
            name = session.get_one(Integration, integration_id).name
    return {"integration_id": integration_id, "integration": name}


# The statements of the runner's hot path, built once: each runs once per document, and
# building and caching a statement anew costs more than executing it.
_DELIVERIES = cast(Table, Delivery.__table__)
_DOCUMENTS = cast(Table, Document.__table__)
_EVENTS = cast(Table, Event.__table__)
_SENDING = _DELIVERIES.c.state == DeliveryState.SENDING


@functools.cache
def _due(skip_busy: bool, one_integration: bool) -> Select[tuple[Any, ...]]:
    """Due deliveries, oldest first, locked for the claim (SKIP LOCKED on PostgreSQL)."""
    table, now = _DELIVERIES, bindparam("b_now", type_=UTCDateTime)
    query = select(
        table.c.id,
        table.c.attempt_id,
        table.c.state,
        table.c.integration_id,
        table.c.last_error_code,
    ).where(
        or_(
            table.c.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED])
            & (table.c.next_attempt_at <= now),
            (table.c.state == DeliveryState.SENDING) & (table.c.lease_until < now),
        )
    )
    if skip_busy:
        query = query.where(table.c.integration_id.not_in(bindparam("b_busy", expanding=True)))
    if one_integration:
        query = query.where(table.c.integration_id == bindparam("b_integration"))
    return (
        query.order_by(table.c.next_attempt_at, table.c.id)
        .limit(bindparam("b_limit", type_=Integer, literal_execute=True))
        .with_for_update(skip_locked=True)
    )


_TAKE = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("b_id"),
        _DELIVERIES.c.attempt_id.is_not_distinct_from(bindparam("b_old")),
    )
    .values(
        state=DeliveryState.SENDING,
        attempt_id=bindparam("b_new"),
        lease_until=bindparam("b_lease"),
        updated_at=bindparam("b_now"),
    )
)
_COMPLETE = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("b_id"),
        _DELIVERIES.c.attempt_id == bindparam("b_attempt"),
        _SENDING,
    )
    .values(
        state=DeliveryState.SENT,
        attempts=_DELIVERIES.c.attempts + 1,
        remote_ref=bindparam("b_ref"),
        last_error_code="",
        last_error_text="",
        lease_until=None,
        updated_at=bindparam("b_now"),
    )
    .returning(_DELIVERIES.c.document_id, _DELIVERIES.c.attempts)
)
_MARK_SENT = (
    update(_DOCUMENTS)
    .where(
        _DOCUMENTS.c.id.in_(bindparam("b_docs", expanding=True)),
        _DOCUMENTS.c.status.in_(
            [status for status, targets in TRANSITIONS.items() if DocStatus.SENT in targets]
        ),
    )
    .values(status=DocStatus.SENT, status_reason="", sent_at=bindparam("b_now"))
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
