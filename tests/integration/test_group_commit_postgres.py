"""Spooled intake and group commit on PostgreSQL: same results as on SQLite (invariant 6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integration.servers import Postgres
from sqlalchemy import func, select

from gateway.intake.accept import Envelope, accept_message, adopt_spooled, commit_arrivals
from gateway.intake.smtpd.group_commit import GroupCommitter
from gateway.intake.spool import SpoolFile
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Message

pytestmark = pytest.mark.integration
ENVELOPE = Envelope("smtp", "s@example.com", ["demo@gateway.localhost"])


def _raw(n: int) -> bytes:
    return f"Message-ID: <pg{n}@example.com>\r\nSubject: {n}\r\n\r\nbody\r\n".encode()


def _spool(store: Store, data: bytes) -> SpoolFile:
    file = SpoolFile(store.blobs.spool_dir)
    file.write(data)
    return file


def test_group_commit_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    store = open_store(postgres.create_database("groupcommit"), tmp_path / "blobs")
    try:
        upgrade(store.engine)
        first = accept_message(store, _raw(0), ENVELOPE)

        async def main() -> list[int]:
            committer = GroupCommitter(lambda batch: commit_arrivals(store, batch))
            arrivals = [
                adopt_spooled(store, _spool(store, _raw(n)).finish(), ENVELOPE) for n in range(12)
            ]
            results = await asyncio.gather(*(committer.commit(a) for a in arrivals))
            assert [r.duplicate for r in results] == [True] + [False] * 11
            return [r.message_id for r in results]

        ids = asyncio.run(main())
        assert ids[0] == first.message_id and len(set(ids)) == 12
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 12
    finally:
        store.engine.dispose()
