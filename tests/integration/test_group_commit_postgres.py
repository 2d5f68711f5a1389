"""Spooled and held intake, group commit, and small raw messages kept as blob rows (one row
for the same bytes twice), on PostgreSQL: same results as on SQLite (invariant 6)."""

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
    Route,
    accept_message,
    adopt_spooled,
    commit_arrivals,
    hold,
)
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.spool import SpoolFile
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import BlobRow, Message

pytestmark = pytest.mark.integration
ENVELOPE = Envelope("smtp", "s@example.com", ["demo@gateway.localhost"])
ENVELOPE_ELSEWHERE = Envelope(
    "smtp", "s@example.com", ["other@gateway.localhost"], [Route("other")]
)


def _raw(n: int) -> bytes:
    return f"Message-ID: <pg{n}@example.com>\r\nSubject: {n}\r\n\r\nbody\r\n".encode()


def _spool(store: Store, data: bytes) -> SpoolFile:
    file = SpoolFile(store.blobs.spool_dir)
    file.write(data)
    return file


def _arrival(store: Store, n: int, envelope: Envelope = ENVELOPE) -> Arrival:
    """Even numbers held in memory, as the SMTP door keeps most mail; odd ones spooled."""
    spool = _spool(store, _raw(n))
    if n % 2:
        return adopt_spooled(store, spool.finish(), envelope)
    held = spool.held()
    assert held is not None
    return hold(held.data, held, envelope)


def _rows(store: Store) -> dict[str, bytes]:
    with store.session() as session:
        return {b.sha256: b.data for b in session.scalars(select(BlobRow))}


def _digest(n: int) -> str:
    return hashlib.sha256(_raw(n)).hexdigest()


def test_group_commit_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    store = open_store(postgres.create_database("groupcommit"), tmp_path / "blobs")
    try:
        upgrade(store.engine)
        first = accept_message(store, _raw(0), ENVELOPE)

        async def main() -> list[int]:
            committer = GroupCommitter(lambda batch: commit_arrivals(store, batch))
            arrivals = [_arrival(store, n) for n in range(12)]
            # The same bytes for another dossier: a message of its own, one blob row.
            arrivals.append(_arrival(store, 2, ENVELOPE_ELSEWHERE))
            results = await asyncio.gather(*(committer.commit(a) for a in arrivals))
            assert [r.duplicate for r in results] == [True] + [False] * 12
            return [r.message_id for r in results]

        ids = asyncio.run(main())
        assert ids[0] == first.message_id and len(set(ids)) == 13
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 13
        # Even ones are rows (0 from `accept_message`), each once; odd ones are files.
        assert _rows(store) == {_digest(n): _raw(n) for n in range(0, 12, 2)}
        runner = PipelineRunner(store, DeliverySettings(), asyncio.Event())
        assert runner.process_batch() == 13
        assert _rows(store) == {_digest(n): _raw(n) for n in range(0, 12, 2)}
        for n in range(12):
            assert store.blobs.get(_digest(n)) == _raw(n)
        assert not store.blobs.path(_digest(0)).exists()
        assert store.blobs.path(_digest(1)).is_file()
    finally:
        store.engine.dispose()
