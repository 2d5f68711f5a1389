"""A batch's documents are checked for duplicates together: against stored originals first,
then against the batch's own earlier originals, never against an earlier duplicate."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, insert

from gateway.pipeline.duplicates import (
    SAME_FILE,
    SAME_IDENTITY,
    NewDocument,
    Original,
    find_originals,
)
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Document, Dossier, Message


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/d.db", tmp_path / "blobs")
    upgrade(store.engine)
    return store


def _new(dossier: int, blob: str, key: str = "") -> NewDocument:
    return NewDocument(dossier, blob, key, {"syntax": "ubl"})


def _stored(store: Store, blob: str, key: str) -> int:
    """A stored document of dossier 1 with file `blob` and identity `key`; its id."""
    with store.session.begin() as session:
        if session.get(Dossier, 1) is None:
            session.add_all([Dossier(id=1, slug="one"), Dossier(id=2, slug="two")])
            session.flush()
        message = session.scalar(
            insert(Message)
            .values(source="smtp", intake_key="k", size=1, raw_sha256="0" * 64, verdict="accepted")
            .returning(Message.id)
        )
        return int(
            session.scalar(
                insert(Document)
                .values(
                    dossier_id=1,
                    message_id=message,
                    filename="a.xml",
                    media_type="application/xml",
                    blob_sha256=blob,
                    size=1,
                    facts={},
                    dedupe_key=key,
                )
                .returning(Document.id)
            )
        )


def test_a_batch_links_each_duplicate_to_the_first_original_by_file_then_identity(
    store: Store,
) -> None:
    docs = [
        _new(1, "a", "k1"),
        _new(1, "b", "k1"),  # same identity as 0
        _new(1, "a", "k2"),  # same file as 0, before same identity
        _new(2, "a", "k1"),  # another dossier: an original
        _new(1, "c", "k3"),
        _new(1, "c", ""),  # same file as 4
        _new(1, "d", ""),
    ]
    with store.session() as session:
        found = find_originals(session, docs)
    assert found == [
        None,
        Original(SAME_IDENTITY, earlier=0),
        Original(SAME_FILE, earlier=0),
        None,
        None,
        Original(SAME_FILE, earlier=4),
        None,
    ]


def test_stored_originals_come_before_the_batch_s_own(store: Store) -> None:
    first = _stored(store, "a", "k1")
    docs = [_new(1, "b", "k1"), _new(1, "b", ""), _new(1, "a", "")]
    with store.session() as session:
        found = find_originals(session, docs)
    # The second repeats the first's file, but the first is a duplicate: it is no original.
    assert found == [
        Original(SAME_IDENTITY, id=first),
        None,
        Original(SAME_FILE, id=first),
    ]


def test_the_check_reads_the_dossier_s_documents_through_its_indexes(store: Store) -> None:
    """It runs for every batch: it must find the candidates by file and by identity, not
    read every document of the dossier."""
    seen: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, sql: str, params: object, *_: object) -> None:
        if sql.startswith("SELECT documents.id"):
            seen.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.session() as session:
            find_originals(session, [_new(1, "a", "k1"), _new(1, "b", "")])
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    ((sql, params),) = seen
    with store.engine.connect() as connection:
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert any("dossier_id=? AND blob_sha256=?" in step for step in plan), plan
    assert any("dossier_id=? AND dedupe_key=?" in step for step in plan), plan
