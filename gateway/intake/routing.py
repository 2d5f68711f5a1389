"""Envelope recipient to dossier: the only routing there is (headers never route).

`acme+purchase@docs.example` is `acme@docs.example` with a document-type hint; any other
`+tag` is accepted as a plain sub-address (as Postfix's recipient_delimiter does) and carries
no hint.

The SMTP door asks for every RCPT, a thousand times a second under load, so it reads the whole
table of addresses and allowed senders at once (`Snapshot`) and keeps it (`RouteBook`). A
snapshot is used for at most `MAX_AGE` seconds, and the door refuses only from a snapshot read
after the command arrived; so an address or an allowed sender added by the CLI or a reload
counts at once, while one removed can still be accepted for up to `MAX_AGE` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.intake.accept import HINTS, Route
from gateway.store.models import Address, AllowedSender, Dossier

DELIMITER = "+"
# How long the SMTP door may answer "yes" from what it read before.
MAX_AGE = 1.0


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
    return _route(lambda candidate: _owner(session, candidate), address)


def _route(owner: Callable[[str], str | None], address: str) -> Route | None:
    exact = address.strip().lower()
    slug = owner(exact)
    if slug is not None:
        return Route(slug)
    base, tag = split_subaddress(exact)
    if not tag:
        return None
    slug = owner(base)
    if slug is None:
        return None
    return Route(slug, tag if tag in HINTS else "")


def _owner(session: Session, address: str) -> str | None:
    return session.scalars(
        select(Dossier.slug).join(Address).where(Address.address == address)
    ).first()


@dataclass(frozen=True)
class Snapshot:
    """Every intake address and allowed-sender pattern, read in one go at `taken` (monotonic)."""

    owners: dict[str, str]
    patterns: dict[str, list[str]]
    taken: float

    def route(self, address: str) -> Route | None:
        """What `resolve` answers, from memory."""
        return _route(self.owners.get, address)

    def allowed(self, slug: str) -> list[str]:
        """The allowed-sender patterns of dossier `slug` (empty: anyone)."""
        return self.patterns.get(slug, [])


def read_snapshot(session: Session) -> Snapshot:
    taken = time.monotonic()
    owners = {
        address: slug
        for address, slug in session.execute(
            select(Address.address, Dossier.slug).join(Dossier, Address.dossier_id == Dossier.id)
        )
    }
    patterns: dict[str, list[str]] = {}
    rows = session.execute(
        select(Dossier.slug, AllowedSender.pattern).join(
            AllowedSender, AllowedSender.dossier_id == Dossier.id
        )
    )
    for slug, pattern in rows:
        patterns.setdefault(slug, []).append(pattern)
    return Snapshot(owners, patterns, taken)


class RouteBook:
    """The latest snapshot, read again (in a thread, once for all waiting sessions) when a
    caller needs one taken no earlier than some moment."""

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self._read = read
        self._latest: Snapshot | None = None
        self._reading: asyncio.Task[None] | None = None

    async def snapshot(self, since: float) -> Snapshot:
        """A snapshot taken at `since` (monotonic) or later."""
        while self._latest is None or self._latest.taken < since:
            if self._reading is None:
                self._reading = asyncio.create_task(self._fetch(), name="route-book")
                self._reading.add_done_callback(_retrieved)
            await asyncio.shield(self._reading)
        return self._latest

    async def _fetch(self) -> None:
        # The state changes before the task is done: whoever sees a finished read sees its
        # snapshot (a done callback would run later, and a waiter in between would spin).
        try:
            latest = await asyncio.to_thread(self._read)
        finally:
            self._reading = None
        if self._latest is None or latest.taken > self._latest.taken:
            self._latest = latest


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a failed read's error as seen even when every waiter has gone."""
    if not task.cancelled():
        task.exception()
