"""The SQL of the delivery runner's hot path, built once.

Each of these runs once per document or per round, and building (and looking up in the cache)
a statement anew costs more than executing it. `attempts` and `rounds` run them on the round's
connection.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import Integer, Select, Table, bindparam, or_, select, update

from gateway.outbound.queue import TRANSITIONS
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocStatus,
    Document,
    Dossier,
    Event,
    Integration,
    UTCDateTime,
)

DELIVERIES = cast(Table, Delivery.__table__)
DOCUMENTS = cast(Table, Document.__table__)
DOSSIERS = cast(Table, Dossier.__table__)
EVENTS = cast(Table, Event.__table__)
INTEGRATIONS = cast(Table, Integration.__table__)
_SENDING = DELIVERIES.c.state == DeliveryState.SENDING


@functools.cache
def due(skip_busy: bool, one_integration: bool) -> Select[tuple[Any, ...]]:
    """Due deliveries, oldest first, locked for the claim (SKIP LOCKED on PostgreSQL), with
    the columns of their document and dossier that sending one needs: the claim reads them
    in the same query rather than in one more.

    Only the delivery rows are locked: another instance claiming a delivery of the same
    document or dossier must not skip it for that.
    """
    table, now = DELIVERIES, bindparam("b_now", type_=UTCDateTime)
    query = (
        select(
            table.c.id,
            table.c.attempt_id,
            table.c.state,
            table.c.integration_id,
            table.c.last_error_code,
            table.c.document_id,
            table.c.attempts,
            DOCUMENTS.c.doc_type,
            DOCUMENTS.c.filename,
            DOCUMENTS.c.media_type,
            DOCUMENTS.c.blob_sha256,
            DOCUMENTS.c.size,
            DOCUMENTS.c.facts,
            DOSSIERS.c.slug,
            DOSSIERS.c.accounting_file_id,
            DOSSIERS.c.overrides,
            DOSSIERS.c.vat_number,
        )
        .join_from(table, DOCUMENTS, table.c.document_id == DOCUMENTS.c.id)
        .join(DOSSIERS, DOCUMENTS.c.dossier_id == DOSSIERS.c.id)
        .where(
            or_(
                # Not `state IN (...)`: SQLAlchemy renders an IN list anew at every execution.
                or_(table.c.state == DeliveryState.QUEUED, table.c.state == DeliveryState.DEFERRED)
                & (table.c.next_attempt_at <= now),
                (table.c.state == DeliveryState.SENDING) & (table.c.lease_until < now),
            )
        )
    )
    if skip_busy:
        query = query.where(table.c.integration_id.not_in(bindparam("b_busy", expanding=True)))
    if one_integration:
        query = query.where(table.c.integration_id == bindparam("b_integration"))
    return (
        query.order_by(table.c.next_attempt_at, table.c.id)
        .limit(bindparam("b_limit", type_=Integer))
        .with_for_update(skip_locked=True, of=table)
    )


TAKE = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.attempt_id.is_not_distinct_from(bindparam("b_old")),
    )
    .values(
        state=DeliveryState.SENDING,
        attempt_id=bindparam("b_new"),
        lease_until=bindparam("b_lease"),
        updated_at=bindparam("b_now"),
    )
)
COMPLETE = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.attempt_id == bindparam("b_attempt"),
        _SENDING,
    )
    .values(
        state=DeliveryState.SENT,
        attempts=DELIVERIES.c.attempts + 1,
        remote_ref=bindparam("b_ref"),
        last_error_code="",
        last_error_text="",
        lease_until=None,
        updated_at=bindparam("b_now"),
    )
)
# Which attempt holds each of some deliveries in a given state.
HELD = select(DELIVERIES.c.id, DELIVERIES.c.attempt_id).where(
    DELIVERIES.c.id.in_(bindparam("b_ids", expanding=True)),
    DELIVERIES.c.state == bindparam("b_state"),
)
MARK_SENT = (
    update(DOCUMENTS)
    .where(
        DOCUMENTS.c.id.in_(bindparam("b_docs", expanding=True)),
        # Not `status IN (...)`, as in `due`: SQLAlchemy renders an IN list anew every time.
        or_(
            *(
                DOCUMENTS.c.status == status
                for status, targets in TRANSITIONS.items()
                if DocStatus.SENT in targets
            )
        ),
    )
    .values(status=DocStatus.SENT, status_reason="", sent_at=bindparam("b_now"))
)
INSERT_EVENTS = EVENTS.insert()
TARGETS = select(
    INTEGRATIONS.c.id, INTEGRATIONS.c.name, INTEGRATIONS.c.kind, INTEGRATIONS.c.options
)
