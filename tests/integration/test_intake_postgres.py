"""The intake's own tables on PostgreSQL, where several instances share one database: the
one-door dedup, the IMAP UID record in the storing transaction, quarantine, allowed senders
and the pipeline's routes and hints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integration.servers import Postgres
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import office
from gateway.config import DeliverySettings, DossierSettings
from gateway.intake.accept import Envelope, Recorder, Route, accept_message
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import open_store, upgrade
from gateway.store.models import Document, ImapSeen, Message

pytestmark = pytest.mark.integration

RAW = (
    b"From: a@client.example\r\nMessage-ID: <pg@client.example>\r\nSubject: x\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    b"hi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b'filename="a.pdf"\r\n\r\n%PDF-1.4\r\n--b--\r\n'
)


def test_intake_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    store = open_store(postgres.create_database("intake"), tmp_path / "blobs")
    upgrade(store.engine)
    try:
        with store.session.begin() as session:
            office.put_dossier(
                session,
                DossierSettings(
                    slug="acme", integration="none", allowed_senders=["@client.example"]
                ),
            )
            assert office.allowed_patterns(session, "acme") == ["@client.example"]

        def record(uid: int) -> Recorder:
            def add(session: Session, message_id: int) -> None:
                session.add(
                    ImapSeen(
                        account="a",
                        folder="INBOX",
                        uidvalidity=2**31 + 7,
                        uid=uid,
                        message_id=message_id,
                    )
                )

            return add

        envelope = Envelope("imap", "a@client.example", [], [Route("acme", "purchase")], "a/1")
        first = accept_message(store, RAW, envelope, record=record(1))
        again = accept_message(store, RAW, envelope, record=record(2))
        assert (first.duplicate, again.duplicate) == (False, True)
        quarantined = accept_message(
            store, RAW + b"\r\n", envelope, quarantine="sender not allowed"
        )
        with store.session() as session:
            seen = session.scalars(select(ImapSeen).order_by(ImapSeen.uid)).all()
            assert [(s.uid, s.message_id) for s in seen] == [
                (1, first.message_id),
                (2, first.message_id),
            ]
            assert session.get_one(Message, quarantined.message_id).verdict == "quarantined"
        runner = PipelineRunner(store, DeliverySettings(), asyncio.Event())
        assert runner.process_batch() == 1
        with store.session() as session:
            [doc] = session.scalars(select(Document)).all()
            assert doc.reason.startswith("type from the address hint +purchase")
    finally:
        store.engine.dispose()
