"""The delivery runner's database side: one transaction per round records, renews and claims.

Every outcome still gets its own fenced write and its own event; a round only shares the
commit (with SQLite's synchronous=FULL, one fsync) among all the deliveries that finished
since the last one, as the SMTP door's group commit does for arrivals; when the runner calls
a round is the runner's business. Claims are taken per integration, up to what its lane may
hold, so one backlogged package cannot starve the others, and are committed before the
runner sends a byte of them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from gateway.config import DeliverySettings
from gateway.outbound import attempts, queue, statements
from gateway.outbound.base import DeliveryError, Outgoing
from gateway.outbound.kinds import concurrency
from gateway.store import blob_rows
from gateway.store.db import Store

# Claims an integration may hold per delivery slot: enough that its lane never runs dry
# while a round commits, few enough that a second instance on PostgreSQL finds work too.
AHEAD = 8
# Bytes of claimed documents a round reads for its jobs: small documents then need no thread
# hand-off of their own when they start; larger ones are read when they start.
READ_AHEAD = 4 * 1024 * 1024


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
    """A claimed delivery. A small document's bytes are read by the round that claimed it, in
    the round's thread; a large one's only when it starts (`data` None), as claims are taken
    ahead and holding every claimed document's bytes would cost memory for nothing."""

    claim: attempts.Claim
    target: Target
    row: attempts.DueRow
    data: bytes | None = None

    @property
    def blob(self) -> str:
        return str(self.row.blob_sha256)

    def outgoing(self, data: bytes) -> Outgoing:
        row, claim = self.row, self.claim
        return Outgoing(
            delivery_id=claim.delivery_id,
            attempt_id=claim.attempt_id,
            document_id=row.document_id,
            dossier=row.slug,
            accounting_file_id=row.accounting_file_id,
            doc_type=row.doc_type.value if row.doc_type else "",
            filename=row.filename,
            media_type=row.media_type,
            data=data,
            sha256=row.blob_sha256,
            facts=dict(row.facts),
            overrides=dict(row.overrides),
            vat=row.vat_number,
            uncertain=claim.uncertain,
        )


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: `error` None means the package has it under `ref`."""

    claim: attempts.Claim
    ref: str = ""
    error: DeliveryError | None = None


@dataclass
class Round:
    outcomes: list[Outcome] = field(default_factory=list)
    renew: list[attempts.Claim] = field(default_factory=list)
    # Stopped before anything could have left: claimable at once, not uncertain.
    release: list[attempts.Claim] = field(default_factory=list)
    # Stopped while handing over: claimable at once, uncertain.
    expire: list[attempts.Claim] = field(default_factory=list)
    # Claims held (queued or running) per integration; None claims nothing (shutting down).
    held: Mapping[int, int] | None = None
    # The integrations as a recent round read them; None reads them again.
    targets: Mapping[int, Target] | None = None


@dataclass
class Result:
    owned: list[bool]
    lost: list[attempts.Claim]
    jobs: list[Job]
    # Integrations the round claimed for, and those of them with nothing more due: claiming
    # for these again before new work is queued (or the poll) would find nothing.
    asked: set[int] = field(default_factory=set)
    dry: set[int] = field(default_factory=set)
    # The integrations this round went by: read by it, or those it was given.
    targets: Mapping[int, Target] = field(default_factory=dict)


def run(store: Store, settings: DeliverySettings, work: Round) -> Result:
    """Do `work` in one transaction."""
    with store.session.begin() as session:
        targets = _targets(session) if work.targets is None else work.targets
        session.info[queue.INTEGRATION_NAMES] = {t.id: t.name for t in targets.values()}
        owned = _record(session, work.outcomes, settings)
        lost = [c for c in work.renew if not attempts.renew(session, c, settings.lease)]
        for claim in work.release:
            attempts.release(session, claim)
        for claim in work.expire:
            attempts.expire(session, claim)
        rooms = {} if work.held is None else _rooms(targets, work.held)
        claims = _claim(session, settings, rooms)
        ahead = _ahead(claims)
        known = blob_rows.fetch(session.connection(), ahead)
    _read_files(store, ahead, known)
    jobs = [
        Job(claim, targets[claim.integration_id], row, known.get(row.blob_sha256))
        for claim, row in claims
    ]
    taken = Counter(claim.integration_id for claim, _ in claims)
    dry = {iid for iid, room in rooms.items() if taken[iid] < room}
    return Result(owned, lost, jobs, set(rooms), dry, targets)


def _ahead(claims: list[tuple[attempts.Claim, attempts.DueRow]]) -> list[str]:
    """The claimed documents whose bytes the round reads, within `READ_AHEAD`. Their rows are
    read in the round's own transaction: one query more, where a connection of its own cost
    the round more than the query."""
    budget, ahead = READ_AHEAD, []
    for _, row in claims:
        if row.size <= budget:
            ahead.append(row.blob_sha256)
            budget -= row.size
    return ahead


def _read_files(store: Store, digests: list[str], found: dict[str, bytes]) -> None:
    """Add to `found` the documents of `digests` that are files; one that cannot be read is
    left to its job (which then reports the error)."""
    for digest in digests:
        if digest not in found:
            with contextlib.suppress(OSError, ValueError):
                found[digest] = store.blobs.path(digest).read_bytes()


def _record(session: Session, outcomes: list[Outcome], settings: DeliverySettings) -> list[bool]:
    """Whether each outcome was still ours to write, in the order given."""
    owned = [False] * len(outcomes)
    sent = [i for i, outcome in enumerate(outcomes) if outcome.error is None]
    accepted = [(outcomes[i].claim, outcomes[i].ref) for i in sent]
    for i, ours in zip(sent, attempts.complete_many(session, accepted), strict=True):
        owned[i] = ours
    for i, outcome in enumerate(outcomes):
        if outcome.error is not None:
            owned[i] = attempts.fail(session, outcome.claim, outcome.error, settings)
    return owned


def _targets(session: Session) -> dict[int, Target]:
    rows = session.connection().execute(statements.TARGETS)
    return {iid: Target(iid, name, kind, dict(options)) for iid, name, kind, options in rows}


def _rooms(targets: Mapping[int, Target], held: Mapping[int, int]) -> dict[int, int]:
    """Claims each integration may take: what its lane holds at most, less what it holds."""
    rooms = {t.id: AHEAD * t.limit - held.get(t.id, 0) for t in targets.values()}
    return {iid: room for iid, room in rooms.items() if room > 0}


def _claim(
    session: Session, settings: DeliverySettings, rooms: dict[int, int]
) -> list[tuple[attempts.Claim, attempts.DueRow]]:
    claims: list[tuple[attempts.Claim, attempts.DueRow]] = []
    for iid, room in rooms.items():
        claims += attempts.claim_documents(session, settings.lease, room, integration_id=iid)
    return claims
