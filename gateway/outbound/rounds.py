"""The delivery runner's database side: one transaction per round records, renews and claims.

Every outcome still gets its own fenced write and its own event; a round only shares the
commit (with SQLite's synchronous=FULL, one fsync) among all the deliveries that finished
while the previous round ran, as the SMTP door's group commit does for arrivals. There is no
timer: a lone delivery is recorded at once. Claims are taken per integration, up to what
its lane may hold, so one backlogged package cannot starve the others, and are committed
before the runner sends a byte of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.outbound.base import DeliveryError, Outgoing, TransientError
from gateway.outbound.kinds import concurrency
from gateway.store.db import Store
from gateway.store.models import Delivery, Document, Dossier, Integration

# Claims an integration may hold per delivery slot: enough that its lane never runs dry
# while a round commits, few enough that a second instance on PostgreSQL finds work too.
AHEAD = 4


@dataclass(frozen=True)
class Target:
    """An integration as the runner needs it: to build (or reuse) its adapter, and its limit."""

    id: int
    name: str
    kind: str
    options: dict[str, Any]

    @property
    def limit(self) -> int:
        return concurrency(self.options)


@dataclass(frozen=True)
class Job:
    claim: queue.Claim
    item: Outgoing
    target: Target


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: `error` None means the package has it under `ref`."""

    claim: queue.Claim
    ref: str = ""
    error: DeliveryError | None = None


@dataclass
class Round:
    outcomes: list[Outcome] = field(default_factory=list)
    renew: list[queue.Claim] = field(default_factory=list)
    # Stopped before anything could have left: claimable at once, not uncertain.
    release: list[queue.Claim] = field(default_factory=list)
    # Stopped while handing over: claimable at once, uncertain.
    expire: list[queue.Claim] = field(default_factory=list)
    # Claims held (queued or running) per integration; None claims nothing (shutting down).
    held: Mapping[int, int] | None = None


@dataclass
class Result:
    owned: list[bool]
    lost: list[queue.Claim]
    jobs: list[Job]
    # Claimed deliveries that could not even be prepared (their blob unreadable, say).
    broken: list[Outcome]


def run(store: Store, settings: DeliverySettings, work: Round) -> Result:
    """Do `work` in one transaction; read the claimed documents' blobs after it committed."""
    with store.session.begin() as session:
        targets = _targets(session)
        session.info[queue.INTEGRATION_NAMES] = {t.id: t.name for t in targets.values()}
        owned = [_record(session, outcome, settings) for outcome in work.outcomes]
        lost = [c for c in work.renew if not queue.renew(session, c, settings.lease)]
        for claim in work.release:
            queue.release(session, claim)
        for claim in work.expire:
            queue.expire(session, claim)
        claims = [] if work.held is None else _claim(session, settings, targets, work.held)
        rows = _rows(session, [c.delivery_id for c in claims])
    jobs, broken = [], []
    for claim in claims:
        doc, dossier = rows[claim.delivery_id]
        try:
            jobs.append(
                Job(claim, _outgoing(store, claim, doc, dossier), targets[claim.integration_id])
            )
        except Exception as exc:  # recorded on the delivery by the next round, never lost
            error = TransientError("internal-error", f"{type(exc).__name__}: {exc}")
            broken.append(Outcome(claim, error=error))
    return Result(owned, lost, jobs, broken)


def _record(session: Session, outcome: Outcome, settings: DeliverySettings) -> bool:
    if outcome.error is None:
        return queue.complete(session, outcome.claim, outcome.ref)
    return queue.fail(session, outcome.claim, outcome.error, settings)


def _targets(session: Session) -> dict[int, Target]:
    rows = session.execute(
        select(Integration.id, Integration.name, Integration.kind, Integration.options)
    )
    return {iid: Target(iid, name, kind, dict(options)) for iid, name, kind, options in rows}


def _claim(
    session: Session,
    settings: DeliverySettings,
    targets: dict[int, Target],
    held: Mapping[int, int],
) -> list[queue.Claim]:
    claims: list[queue.Claim] = []
    for target in targets.values():
        room = AHEAD * target.limit - held.get(target.id, 0)
        if room > 0:
            claims += queue.claim(session, settings.lease, room, integration_id=target.id)
    return claims


def _rows(session: Session, ids: list[int]) -> dict[int, tuple[Document, Dossier]]:
    if not ids:
        return {}
    query = (
        select(Delivery.id, Document, Dossier)
        .join(Document, Delivery.document_id == Document.id)
        .join(Dossier, Document.dossier_id == Dossier.id)
        .where(Delivery.id.in_(ids))
    )
    return {delivery_id: (doc, dossier) for delivery_id, doc, dossier in session.execute(query)}


def _outgoing(store: Store, claim: queue.Claim, doc: Document, dossier: Dossier) -> Outgoing:
    return Outgoing(
        delivery_id=claim.delivery_id,
        attempt_id=claim.attempt_id,
        document_id=doc.id,
        dossier=dossier.slug,
        accounting_file_id=dossier.accounting_file_id,
        doc_type=doc.doc_type.value if doc.doc_type else "",
        filename=doc.filename,
        media_type=doc.media_type,
        data=store.blobs.get(doc.blob_sha256),
        sha256=doc.blob_sha256,
        facts=dict(doc.facts),
        overrides=dict(dossier.overrides),
        vat=dossier.vat_number,
        uncertain=claim.uncertain,
    )
