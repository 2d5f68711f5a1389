"""Envelope recipient to dossier: the only routing there is (headers never route).

`acme+purchase@docs.example` is `acme@docs.example` with a document-type hint; any other
`+tag` is accepted as a plain sub-address (as Postfix's recipient_delimiter does) and carries
no hint.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.intake.accept import HINTS, Route
from gateway.store.models import Address, Dossier

DELIMITER = "+"


def split_subaddress(address: str) -> tuple[str, str]:
    """(`base address`, `tag`) of a lower-cased address; tag is "" without a delimiter."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower(), ""
    base, delim, tag = local.partition(DELIMITER)
    if not delim or not base:
        return f"{local}@{domain}", ""
    return f"{base}@{domain}", tag


def resolve(session: Session, address: str) -> Route | None:
    """The dossier owning `address` (or its base address), or None when no dossier does."""
    exact = address.strip().lower()
    slug = _owner(session, exact)
    if slug is not None:
        return Route(slug)
    base, tag = split_subaddress(exact)
    if not tag:
        return None
    slug = _owner(session, base)
    if slug is None:
        return None
    return Route(slug, tag if tag in HINTS else "")


def _owner(session: Session, address: str) -> str | None:
    return session.scalars(
        select(Dossier.slug).join(Address).where(Address.address == address)
    ).first()
