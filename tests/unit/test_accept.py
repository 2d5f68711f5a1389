"""The one door: the same raw message for the same dossiers is stored once, whichever door
brought it; for other dossiers it is a new intake; quarantine is recorded, not processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.intake.accept import Envelope, Route, accept_message
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Message

RAW = b"From: a@example.com\r\nMessage-ID: <1@example.com>\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/gw.db", tmp_path / "blobs")
    upgrade(store.engine)
    return store


def test_same_message_through_any_door_is_stored_once(store: Store) -> None:
    smtp = accept_message(
        store, RAW, Envelope("smtp", "a@example.com", ["acme@x"], [Route("acme")])
    )
    imap = accept_message(store, RAW, Envelope("imap", "", [], [Route("acme")], "acct/INBOX/1/5"))
    folder = accept_message(store, RAW, Envelope("folder", "", [], [Route("acme")], "acme/m.eml"))
    assert not smtp.duplicate
    assert imap.duplicate and folder.duplicate
    assert imap.message_id == folder.message_id == smtp.message_id


def test_other_dossiers_or_other_bytes_are_new_messages(store: Store) -> None:
    first = accept_message(store, RAW, Envelope("smtp", "", [], [Route("acme")]))
    other = accept_message(store, RAW, Envelope("smtp", "", [], [Route("beta")]))
    changed = accept_message(store, RAW + b"!", Envelope("smtp", "", [], [Route("acme")]))
    assert len({first.message_id, other.message_id, changed.message_id}) == 3


def test_quarantine_is_recorded_and_not_left_for_the_pipeline(store: Store) -> None:
    done = accept_message(store, RAW, Envelope("imap", "", [], [Route("acme")]), quarantine="why")
    with store.session() as session:
        row = session.get_one(Message, done.message_id)
        assert (row.verdict, row.reason) == ("quarantined", "why")
        assert row.processed_at is not None
