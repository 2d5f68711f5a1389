"""Queueing documents the rules stage has just made: one statement for a batch's deliveries.

`queue.enqueue` queues one document through the session, finding and requeueing an earlier
delivery of it. A document made in this very transaction has none, so its delivery is a
plain new row; a batch's are inserted together, with the events that record them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, insert

from gateway.config import DeliverySettings
from gateway.store.models import Delivery, DeliveryState

_DELIVERIES = cast(Table, Delivery.__table__)
# The rows come back with their document: one statement for all, in whatever order.
_INSERT = insert(_DELIVERIES).returning(_DELIVERIES.c.document_id, _DELIVERIES.c.id)


def enqueue_new(
    connection: Connection,
    wanted: Sequence[tuple[int, int]],
    settings: DeliverySettings,
    now: datetime,
    names: Mapping[int, str],
) -> list[dict[str, Any]]:
    """Queue each new document for its integration, `(document id, integration id)` pairs
    (one per document) that auto-send has already found sendable; `names` are the
    integrations' names, which the caller has read with its dossiers. Returns their
    `delivery_queued` events, in order, for the caller to insert with its own."""
    if not wanted:
        return []
    expires = now + timedelta(seconds=settings.lifetime)
    rows = [_row(document, integration, now, expires) for document, integration in wanted]
    ids: dict[int, int] = {row.document_id: row.id for row in connection.execute(_INSERT, rows)}
    return [
        {
            "at": now,
            "kind": "delivery_queued",
            "message_id": None,
            "document_id": document,
            "delivery_id": ids[document],
            "detail": {"integration_id": integration, "integration": names[integration]},
        }
        for document, integration in wanted
    ]


def _row(document: int, integration: int, now: datetime, expires: datetime) -> dict[str, Any]:
    return {
        "document_id": document,
        "integration_id": integration,
        "state": DeliveryState.QUEUED,
        "attempts": 0,
        "attempt_id": None,
        "lease_until": None,
        "next_attempt_at": now,
        "expires_at": expires,
        "last_error_code": "",
        "last_error_text": "",
        "remote_ref": "",
        "created_at": now,
        "updated_at": now,
    }
