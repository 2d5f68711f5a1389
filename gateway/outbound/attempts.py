"""A delivery's attempts: claim with a lease, renew, give back, and record how each ended.

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

import random
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Update, update
from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.outbound import statements
from gateway.outbound.base import (
    UNCERTAIN_PREFIX,
    DeliveryError,
    PermanentError,
    RejectedError,
    TransientError,
    UncertainError,
)
from gateway.outbound.queue import NotSendable, delivery_event, integration_detail, set_status
from gateway.store.models import Delivery, DeliveryState, DocStatus, utcnow

# A claimed delivery's row as `statements.due` reads it: its own columns and its document's.
DueRow = Row[tuple[Any, ...]]


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt_id: str
    integration_id: int
    # The previous attempt was cut off while sending: the package may already have the document.
    uncertain: bool = False
    # What recording the outcome needs without reading the delivery again: its document, and
    # the attempts before this one (only the attempt that owns the delivery counts them up).
    document_id: int = 0
    attempts: int = 0


def claim(
    session: Session,
    lease: float,
    limit: int,
    busy: Collection[int] = frozenset(),
    integration_id: int | None = None,
) -> list[Claim]:
    """Take up to `limit` due deliveries, skipping integrations in `busy` (or of the one
    `integration_id` only); the caller commits."""
    return [claim for claim, _ in claim_documents(session, lease, limit, busy, integration_id)]


def claim_documents(
    session: Session,
    lease: float,
    limit: int,
    busy: Collection[int] = frozenset(),
    integration_id: int | None = None,
) -> list[tuple[Claim, DueRow]]:
    """`claim`, each claim with the row that claimed it, which holds the columns of its
    document and dossier that sending it needs."""
    now = utcnow()
    values: dict[str, object] = {"b_now": now, "b_limit": limit}
    if busy:
        values["b_busy"] = list(busy)
    if integration_id is not None:
        values["b_integration"] = integration_id
    connection = session.connection()
    due = statements.due(bool(busy), integration_id is not None)
    rows = connection.execute(due, values).all()
    if not rows:
        return []
    lease_until = now + timedelta(seconds=lease)
    claims = [
        Claim(
            row.id,
            str(uuid.uuid4()),
            row.integration_id,
            row.state is DeliveryState.SENDING or row.last_error_code.startswith(UNCERTAIN_PREFIX),
            row.document_id,
            row.attempts,
        )
        for row in rows
    ]
    takes = [
        {
            "b_id": claim.delivery_id,
            "b_old": row.attempt_id,
            "b_new": claim.attempt_id,
            "b_lease": lease_until,
            "b_now": now,
        }
        for claim, row in zip(claims, rows, strict=True)
    ]
    taken = _fenced(connection, statements.TAKE, takes, claims, DeliveryState.SENDING)
    for claim, row, ours in zip(claims, rows, taken, strict=True):
        if ours and row.state is DeliveryState.SENDING:
            delivery_event(
                session,
                "delivery_uncertain",
                session.get_one(Delivery, claim.delivery_id),
                attempt=claim.attempt_id,
                previous_attempt=row.attempt_id or "",
            )
    return [(claim, row) for claim, row, ours in zip(claims, rows, taken, strict=True) if ours]


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
    one fenced UPDATE for every attempt (one executemany), then one status update and one
    insert of events for all the attempts that were still ours.
    """
    if not accepted:
        return []
    now = utcnow()
    connection = session.connection()
    claims = [claim for claim, _ in accepted]
    params = [
        {"b_id": claim.delivery_id, "b_attempt": claim.attempt_id, "b_ref": ref, "b_now": now}
        for claim, ref in accepted
    ]
    owned = _fenced(connection, statements.COMPLETE, params, claims, DeliveryState.SENT)
    documents, events = [], []
    for (claim, remote_ref), ours in zip(accepted, owned, strict=True):
        if not ours:
            _superseded(session, claim, "sent", remote_ref=remote_ref)
            continue
        documents.append(claim.document_id)
        extra = {"uncertain": "yes"} if claim.uncertain else {}
        events.append(
            {
                "at": now,
                "kind": "delivery_attempt",
                "document_id": claim.document_id,
                "delivery_id": claim.delivery_id,
                "detail": {
                    **integration_detail(session, claim.integration_id),
                    "attempt": claim.attempt_id,
                    "number": str(claim.attempts + 1),
                    "outcome": "sent",
                    **extra,
                    "remote_ref": remote_ref,
                },
            }
        )
    if documents:
        sent = connection.execute(statements.MARK_SENT, {"b_docs": documents, "b_now": now})
        if sent.rowcount != len(documents):
            raise NotSendable(f"documents {documents} cannot all go to {DocStatus.SENT}")
        connection.execute(statements.INSERT_EVENTS, events)
    return owned


def _fenced(
    connection: Connection,
    statement: Update,
    params: list[dict[str, Any]],
    claims: Sequence[Claim],
    state: DeliveryState,
) -> list[bool]:
    """Run a write fenced by each claim's attempt id for all of them in one executemany;
    which claims it applied to (the delivery is then in `state` under the claim's attempt).

    The rows written add up to all of them unless one was taken over meanwhile, which is
    rare: only then (or with a driver that cannot count an executemany) one read says which.
    """
    written = connection.execute(statement, params).rowcount
    if written == len(params) and connection.dialect.supports_sane_multi_rowcount:
        return [True] * len(params)
    ids = [claim.delivery_id for claim in claims]
    now_held = dict(connection.execute(statements.HELD, {"b_ids": ids, "b_state": state}).all())
    return [now_held.get(claim.delivery_id) == claim.attempt_id for claim in claims]


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
    delivery_event(
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
    delivery_event(
        session,
        "delivery_attempt",
        delivery,
        attempt=claim.attempt_id,
        number=str(delivery.attempts),
        outcome=outcome,
        **extra,
        **detail,
    )
