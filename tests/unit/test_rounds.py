"""The delivery runner's rounds on a real SQLite database: one commit for many outcomes,
claims per integration within its lane."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import event, select

from gateway.config import DeliverySettings
from gateway.outbound import attempts, queue, rounds
from gateway.outbound.base import TransientError
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocType,
    Document,
    Dossier,
    Event,
    Integration,
)

SETTINGS = DeliverySettings()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/r.db", tmp_path / "blobs")
    upgrade(store.engine)
    return store


def _queue(store: Store, integration: str, count: int, concurrency: int = 2) -> int:
    """`count` documents queued for a new integration; returns the integration's id."""
    with store.session.begin() as session:
        target = Integration(
            name=integration, kind="directory", options={"path": "x", "concurrency": concurrency}
        )
        dossier = Dossier(slug=integration, integration=target)
        for n in range(count):
            data = f"<Invoice>{integration}-{n}</Invoice>".encode()
            doc = Document(
                dossier=dossier,
                filename=f"{n}.xml",
                media_type="application/xml",
                blob_sha256=store.blobs.put(data),
                size=len(data),
                doc_type=DocType.PURCHASE_INVOICE,
            )
            session.add(doc)
            session.flush()
            queue.send(session, doc, SETTINGS)
        session.flush()
        return target.id


def _commits(store: Store) -> list[int]:
    counted = [0]

    def count(_conn: object) -> None:
        counted[0] += 1

    event.listen(store.engine, "commit", count)
    return counted


def test_one_round_records_every_outcome_in_one_commit_each_fenced_with_its_event(
    store: Store,
) -> None:
    _queue(store, "drop", 5)
    claimed = rounds.run(store, SETTINGS, rounds.Round(held={}))
    assert len(claimed.jobs) == 5
    commits = _commits(store)
    *sent, failed = claimed.jobs
    outcomes = [rounds.Outcome(job.claim, ref=f"/drop/{job.row.filename}") for job in sent]
    refused = rounds.Outcome(failed.claim, error=TransientError("connect-failed", "refused"))
    stale = rounds.Outcome(attempts.Claim(sent[0].claim.delivery_id, "stale", 1), ref="x")
    result = rounds.run(store, SETTINGS, rounds.Round(outcomes=[*outcomes, refused, stale]))
    assert commits == [1]
    assert result.owned == [True] * 5 + [False]
    with store.session() as session:
        states = Counter(session.scalars(select(Delivery.state)))
        kinds = [(e.kind, e.detail.get("outcome")) for e in session.scalars(select(Event))]
    assert states == {DeliveryState.SENT: 4, DeliveryState.DEFERRED: 1}
    assert kinds.count(("delivery_attempt", "sent")) == 4
    assert kinds.count(("delivery_attempt", "deferred")) == 1
    assert kinds.count(("attempt_superseded", "sent")) == 1


def test_claims_fill_each_lane_and_a_backlogged_integration_does_not_starve_another(
    store: Store,
) -> None:
    busy = _queue(store, "busy", 50, concurrency=2)
    quiet = _queue(store, "quiet", 3, concurrency=1)
    first = rounds.run(store, SETTINGS, rounds.Round(held={}))
    per_lane = {busy: 0, quiet: 0}
    for job in first.jobs:
        per_lane[job.target.id] += 1
    assert per_lane == {busy: rounds.AHEAD * 2, quiet: 3}
    held = {busy: rounds.AHEAD * 2 - 1, quiet: 0}
    second = rounds.run(store, SETTINGS, rounds.Round(held=held))
    assert [job.target.id for job in second.jobs] == [busy]


def test_a_round_without_claims_takes_nothing(store: Store) -> None:
    _queue(store, "drop", 2)
    assert rounds.run(store, SETTINGS, rounds.Round()).jobs == []
    assert len(rounds.run(store, SETTINGS, rounds.Round(held={})).jobs) == 2


def test_a_lane_is_dry_when_its_claim_found_less_than_its_room(store: Store) -> None:
    busy = _queue(store, "busy", rounds.AHEAD * 2 + 1, concurrency=2)
    quiet = _queue(store, "quiet", 1, concurrency=1)
    first = rounds.run(store, SETTINGS, rounds.Round(held={}))
    assert (first.asked, first.dry) == ({busy, quiet}, {quiet})
    full = {busy: rounds.AHEAD * 2, quiet: rounds.AHEAD}
    second = rounds.run(store, SETTINGS, rounds.Round(held=full))
    assert (second.asked, second.dry, second.jobs) == (set(), set(), [])
    third = rounds.run(store, SETTINGS, rounds.Round(held={busy: rounds.AHEAD * 2 - 2}))
    assert (third.asked, third.dry) == ({busy, quiet}, {busy, quiet})
    assert [job.target.id for job in third.jobs] == [busy]


def test_a_claim_reads_its_documents_in_the_claiming_query(store: Store) -> None:
    """Three reads per claiming round: the integrations, the due deliveries with their
    documents, and those documents' bytes that are blob rows, all in one; not one read per
    document claimed."""
    _queue(store, "drop", 3)
    selects = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    claimed = rounds.run(store, SETTINGS, rounds.Round(held={}))
    assert sorted(job.row.filename for job in claimed.jobs) == ["0.xml", "1.xml", "2.xml"]
    assert len(selects) == 3 and "FROM blobs" in selects[2]
    assert all(job.data is not None for job in claimed.jobs)
