"""Spooled and held intake, group commit, and held bytes filed by the rules stage, on
PostgreSQL: same results as on SQLite (invariant 6)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from integration.servers import Postgres
from sqlalchemy import func, select

from gateway.config import DeliverySettings
from gateway.intake.accept import (
    Arrival,
    Envelope,
    accept_message,
    adopt_spooled,
    commit_arrivals,
    hold,
)
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.spool import SpoolFile
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import HeldRaw, Message

pytestmark = pytest.mark.integration
ENVELOPE = Envelope("smtp", "s@example.com", ["demo@gateway.localhost"])


def _raw(n: int) -> bytes:
    return f"Message-ID: <pg{n}@example.com>\r\nSubject: {n}\r\n\r\nbody\r\n".encode()


def _spool(store: Store, data: bytes) -> SpoolFile:
    file = SpoolFile(store.blobs.spool_dir)
    file.write(data)
    return file


def _arrival(store: Store, n: int) -> Arrival:
    """Even numbers held in memory, as the SMTP door keeps most mail; odd ones spooled."""
    spool = _spool(store, _raw(n))
    if n % 2:
        return adopt_spooled(store, spool.finish(), ENVELOPE)
    held = spool.held()
    assert held is not None
    return hold(held.data, held, ENVELOPE)


def _held(store: Store) -> dict[int, bytes]:
    with store.session() as session:
        return {h.message_id: h.data for h in session.scalars(select(HeldRaw))}


def test_group_commit_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    store = open_store(postgres.create_database("groupcommit"), tmp_path / "blobs")
    try:
        upgrade(store.engine)
        first = accept_message(store, _raw(0), ENVELOPE)

        async def main() -> list[int]:
            committer = GroupCommitter(lambda batch: commit_arrivals(store, batch))
            arrivals = [_arrival(store, n) for n in range(12)]
            results = await asyncio.gather(*(committer.commit(a) for a in arrivals))
            assert [r.duplicate for r in results] == [True] + [False] * 11
            return [r.message_id for r in results]

        ids = asyncio.run(main())
        assert ids[0] == first.message_id and len(set(ids)) == 12
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 12
        # The duplicate (0) held nothing more; the other even ones are held.
        assert _held(store) == {ids[n]: _raw(n) for n in range(2, 12, 2)}
        runner = PipelineRunner(store, DeliverySettings(), asyncio.Event())
        assert runner.process_batch() == 12
        assert _held(store) == {}
        for n in range(12):
            assert store.blobs.get(hashlib.sha256(_raw(n)).hexdigest()) == _raw(n)
    finally:
        store.engine.dispose()
