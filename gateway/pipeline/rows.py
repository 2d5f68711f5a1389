"""What the rules stage reads of messages and dossiers: the few columns it needs, as plain values.

Loading mapped objects (identity map, instance state, every column) for each message and
dossier of a batch cost the stage more than the statements themselves; it only reads them,
so it selects the columns it uses through the connection, and holds them in small frozen
values that cannot be mistaken for objects a session would flush. The statements are built
once: building and keying a statement per batch cost more than running it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from gateway.store.models import Address, BlobRow, Dossier, Integration, Message

_MESSAGES = cast(Table, Message.__table__)
_DOSSIERS = cast(Table, Dossier.__table__)
_ADDRESSES = cast(Table, Address.__table__)
_BLOBS = cast(Table, BlobRow.__table__)
_INTEGRATIONS = cast(Table, Integration.__table__)


@dataclass(frozen=True)
class Pending:
    """A message waiting for the rules stage."""

    id: int
    raw_sha256: str
    mail_from: str
    header_from: str
    subject: str
    recipients: list[str]
    routes: list[dict[str, str]]
    # The raw message when it is a blob row, else it is the blob file `raw_sha256`.
    held: bytes | None


@dataclass(frozen=True)
class DossierRow:
    """What deciding about a dossier's documents and queueing them reads of it."""

    id: int
    slug: str
    vat_number: str
    company_number: str
    ibans: tuple[str, ...]
    auto_send: bool
    integration_id: int | None
    # Recorded in the events of the deliveries queued to it.
    integration_name: str = ""


_PENDING = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.raw_sha256,
        _MESSAGES.c.mail_from,
        _MESSAGES.c.header_from,
        _MESSAGES.c.subject,
        _MESSAGES.c.recipients,
        _MESSAGES.c.routes,
        _BLOBS.c.data,
    )
    .join_from(_MESSAGES, _BLOBS, _BLOBS.c.sha256 == _MESSAGES.c.raw_sha256, isouter=True)
    .where(_MESSAGES.c.processed_at.is_(None))
    .order_by(_MESSAGES.c.id)
    .limit(bindparam("limit"))
)
_DOSSIER = select(
    _DOSSIERS.c.id,
    _DOSSIERS.c.slug,
    _DOSSIERS.c.vat_number,
    _DOSSIERS.c.company_number,
    _DOSSIERS.c.ibans,
    _DOSSIERS.c.auto_send,
    _DOSSIERS.c.integration_id,
    select(_INTEGRATIONS.c.name)
    .where(_INTEGRATIONS.c.id == _DOSSIERS.c.integration_id)
    .scalar_subquery()
    .label("integration_name"),
)
_BY_SLUGS = _DOSSIER.where(_DOSSIERS.c.slug.in_(bindparam("slugs", expanding=True)))
_BY_ADDRESSES = (
    _DOSSIER.join_from(_DOSSIERS, _ADDRESSES, _ADDRESSES.c.dossier_id == _DOSSIERS.c.id)
    .where(_ADDRESSES.c.address.in_(bindparam("addresses", expanding=True)))
    .order_by(_DOSSIERS.c.id)
)
_LOCK = (
    _DOSSIER.where(_DOSSIERS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DOSSIERS.c.id)
    .with_for_update()
)


def pending(session: Session, limit: int) -> list[Pending]:
    """The oldest `limit` messages not processed yet."""
    rows = session.connection().execute(_PENDING, {"limit": limit})
    return [
        Pending(
            row.id,
            row.raw_sha256,
            row.mail_from,
            row.header_from,
            row.subject,
            list(row.recipients or []),
            list(row.routes or []),
            row.data,
        )
        for row in rows
    ]


def by_slugs(session: Session, slugs: Collection[str]) -> dict[str, DossierRow]:
    rows = session.connection().execute(_BY_SLUGS, {"slugs": list(slugs)})
    return {found.slug: found for found in _rows(rows)}


def by_addresses(session: Session, addresses: Collection[str]) -> list[DossierRow]:
    """The dossiers owning any of `addresses`, by id."""
    joined = session.connection().execute(_BY_ADDRESSES, {"addresses": list(addresses)})
    found = {row.id: row for row in _rows(joined)}
    return list(found.values())


def lock(session: Session, ids: Collection[int]) -> dict[int, DossierRow]:
    """The dossiers `ids`, locked for the rest of the transaction: on PostgreSQL another
    instance writing to one of them waits for this commit, which serialises duplicate checks
    per dossier (SQLite has a single writer anyway). Locked in id order, so two instances
    never wait on each other in a circle."""
    locked = session.connection().execute(_LOCK, {"ids": list(ids)})
    return {found.id: found for found in _rows(locked)}


def _rows(rows: Iterable[Any]) -> list[DossierRow]:
    return [
        DossierRow(
            row.id,
            row.slug,
            row.vat_number,
            row.company_number,
            tuple(row.ibans or ()),
            bool(row.auto_send),
            row.integration_id,
            row.integration_name or "",
        )
        for row in rows
    ]
