"""The rules stage works in batches: one commit for many messages, a failure set aside alone,
blobs durable before the rows that name them, nothing staged left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, select

import gateway.pipeline.runner
import gateway.pipeline.write
from gateway.config import DeliverySettings, DossierSettings, IntegrationEntry
from gateway.intake.accept import Envelope, accept_message, commit_arrivals, hold
from gateway.intake.spool import Held
from gateway.office import put_dossier, put_integration
from gateway.pipeline.runner import PipelineRunner
from gateway.store import blob_rows
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import BlobRow, Delivery, Document, Event, Message

ADDRESS = "acme@docs.example"
REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path}/p.db", tmp_path / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        drop = IntegrationEntry("drop", "directory", {"path": str(tmp_path / "out")})
        put_integration(session, drop, "t")
        spec = DossierSettings(
            "acme", "drop", vat="BE0123456749", addresses=[ADDRESS], auto_send=True
        )
        put_dossier(session, spec)
    return store


def accept(store: Store, n: int, filename: str = "", held: bool = False) -> bytes:
    """An invoice mail accepted as the IMAP and folder doors do, or `held` as the SMTP door
    takes most mail."""
    msg = EmailMessage()
    msg["From"] = "supplier@example.com"
    msg["To"] = ADDRESS
    msg["Subject"] = f"invoice {n}"
    msg["Message-ID"] = f"<batch-{n}@example.com>"
    msg.set_content("attached")
    data = INVOICE.replace(b"INV-2026-0042", f"INV-BATCH-{n:03d}".encode())
    name = filename or f"inv-{n}.xml"
    msg.add_attachment(data, maintype="application", subtype="xml", filename=name)
    return take(store, msg.as_bytes(), "supplier@example.com", held)


def take(store: Store, raw: bytes, sender: str, held: bool) -> bytes:
    envelope = Envelope("smtp", sender, [ADDRESS])
    if not held:
        accept_message(store, raw, envelope)
        return raw
    commit_arrivals(store, [hold(raw, Held.of(raw), envelope)])
    return raw


def runner(store: Store) -> PipelineRunner:
    return PipelineRunner(store, DeliverySettings(), asyncio.Event())


def commits(store: Store) -> list[int]:
    seen: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: seen.append(1))
    return seen


def test_a_batch_of_messages_is_one_commit(store: Store) -> None:
    for n in range(6):
        accept(store, n)
    seen = commits(store)
    assert runner(store).process_batch() == 6
    assert len(seen) == 1
    with store.session() as session:
        docs = session.scalars(select(Document).order_by(Document.id)).all()
        assert [d.filename for d in docs] == [f"inv-{n}.xml" for n in range(6)]
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        assert [d.document_id for d in deliveries] == [d.id for d in docs]
        queued = session.scalars(select(Event).where(Event.kind == "delivery_queued")).all()
        assert {(e.document_id, e.delivery_id) for e in queued} == {
            (d.document_id, d.id) for d in deliveries
        }
        assert all(m.processed_at for m in session.scalars(select(Message)))


def test_a_queued_delivery_s_event_names_its_integration(store: Store) -> None:
    """The name is read with the batch's dossiers, in the writing transaction."""
    accept(store, 0)
    assert runner(store).process_batch() == 1
    with store.session() as session:
        (queued,) = session.scalars(select(Event).where(Event.kind == "delivery_queued")).all()
        (delivery,) = session.scalars(select(Delivery)).all()
    assert queued.detail == {"integration_id": delivery.integration_id, "integration": "drop"}


def test_a_message_failing_in_its_savepoint_is_shunted_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault while the batch is written: that message's rows are rolled back, it is
    set aside with the reason, and the messages before and after it are kept."""
    for n in range(5):
        accept(store, n, filename="boom.xml" if n == 2 else "")
    real = gateway.pipeline.write.enqueue_new

    def failing(connection: Connection, wanted: list[tuple[int, int]], *args: Any) -> Any:
        ids = [document for document, _ in wanted]
        names = connection.scalars(select(Document.filename).where(Document.id.in_(ids)))
        if "boom.xml" in names.all():  # its document is in the database when it fails
            raise RuntimeError("injected")
        return real(connection, wanted, *args)

    monkeypatch.setattr(gateway.pipeline.write, "enqueue_new", failing)
    seen = commits(store)
    assert runner(store).process_batch() == 5
    assert len(seen) == 1
    with store.session() as session:
        docs = session.scalars(select(Document).order_by(Document.id)).all()
        assert [d.filename for d in docs] == ["inv-0.xml", "inv-1.xml", "inv-3.xml", "inv-4.xml"]
        assert len(session.scalars(select(Delivery)).all()) == 4
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        assert [m.verdict for m in messages] == ["accepted"] * 2 + ["failed"] + ["accepted"] * 2
        assert messages[2].reason == "internal-error: RuntimeError: injected"
        assert all(m.processed_at for m in messages)


def test_savepoints_are_taken_only_when_a_message_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that writes cleanly costs no savepoint; one that fails is rolled back whole
    and written again in a second transaction, a savepoint per message."""
    for n in range(3):
        accept(store, n)
    statements: list[str] = []
    event.listen(
        store.engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0])
    )
    assert runner(store).process_batch(limit=1) == 1
    assert "SAVEPOINT" not in statements
    statements.clear()
    real = gateway.pipeline.write.write_batch

    def failing(session: Any, items: list[Any], *args: Any) -> int:
        if len(items) > 1:
            raise RuntimeError("injected")
        return real(session, items, *args)

    monkeypatch.setattr(gateway.pipeline.runner, "write_batch", failing)
    assert runner(store).process_batch() == 2
    assert statements.count("SAVEPOINT") == 2
    with store.session() as session:
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        assert [m.verdict for m in messages] == ["accepted"] * 3
        assert len(session.scalars(select(Document)).all()) == 3


def fsyncs(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[str]:
    """File syncs and commits, in order."""
    order: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    event.listen(store.engine, "commit", lambda _conn: order.append("commit"))
    return order


def blob_files(store: Store) -> list[Path]:
    return [p for p in store.blobs.root.rglob("*") if p.is_file()]


def test_small_blobs_are_rows_made_durable_by_the_one_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw messages and documents under the row limit: no file, no file sync, only the
    batch's commit; every blob reads back from its row."""
    raws = [accept(store, n, held=n % 2 == 0) for n in range(8)]
    order = fsyncs(monkeypatch, store)
    assert runner(store).process_batch() == 8
    assert order == ["commit"]
    assert blob_files(store) == []
    with store.session() as session:
        digests = set(session.scalars(select(Document.blob_sha256)))
        rows = set(session.scalars(select(BlobRow.sha256)))
    raw_digests = {hashlib.sha256(raw).hexdigest() for raw in raws}
    assert len(digests) == 8 and rows == digests | raw_digests
    assert all(store.blobs.get(hashlib.sha256(raw).hexdigest()) == raw for raw in raws)
    assert all(b"<Invoice" in store.blobs.get(d) for d in digests)


def test_blobs_past_the_row_limit_are_files_synced_together_before_the_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new blob file is synced once and each directory once, all before the commit; the
    documents' files are in place, none of them is a row, and nothing staged is left."""
    monkeypatch.setattr(blob_rows, "ROW_LIMIT", 100)
    for n in range(8):
        accept(store, n)
    order = fsyncs(monkeypatch, store)
    runner(store).process_batch()
    with store.session() as session:
        digests = set(session.scalars(select(Document.blob_sha256)))
        assert session.scalars(select(BlobRow)).all() == []
    directories = {store.blobs.path(d).parent for d in digests}
    assert order == ["fsync"] * (len(digests) + len(directories)) + ["commit"]
    assert all(store.blobs.path(d).is_file() for d in digests)
    assert list((store.blobs.root / ".staging").iterdir()) == []


def test_a_quarantined_message_in_a_batch_is_kept_aside_and_stages_nothing(
    store: Store, tmp_path: Path
) -> None:
    accept(store, 0)
    raw = b"From: a@example.com\r\nX-Junk: " + b"a" * 200_000 + b"\r\n\r\nbody"
    accept_message(store, raw, Envelope("smtp", "a@example.com", [ADDRESS]))
    accept(store, 1)
    assert runner(store).process_batch() == 3
    with store.session() as session:
        messages = session.scalars(select(Message).order_by(Message.id)).all()
        assert [m.verdict for m in messages] == ["accepted", "quarantined", "accepted"]
        assert len(session.scalars(select(Document)).all()) == 2
    assert list((store.blobs.root / ".staging").iterdir()) == []


def test_a_batch_that_fails_to_commit_leaves_no_blob_row_of_its_documents(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blobs are rows of the batch's transaction: a failure before its commit takes
    them back with the documents, and the messages (their raw rows kept) are done again."""
    raws = [accept(store, n, held=True) for n in range(3)]

    def broken(name: str) -> None:
        if name == "pipeline_before_commit":
            raise RuntimeError("injected before the commit")

    monkeypatch.setattr(gateway.pipeline.runner, "crashpoint", broken)
    with pytest.raises(RuntimeError):
        runner(store).process_batch()
    with store.session() as session:
        rows = set(session.scalars(select(BlobRow.sha256)))
        assert rows == {hashlib.sha256(raw).hexdigest() for raw in raws}
        assert session.scalars(select(Document)).all() == []
    monkeypatch.undo()
    assert runner(store).process_batch() == 3
    with store.session() as session:
        assert len(session.scalars(select(Document)).all()) == 3
        assert len(session.scalars(select(BlobRow)).all()) == 6
    assert blob_files(store) == []


def test_staged_files_left_by_a_crash_are_swept(store: Store) -> None:
    writer = store.blobs.stage()
    writer.write(b"half a document")
    staged = writer.finish()
    old = staged.path.stat().st_mtime - 7200
    os.utime(staged.path, (old, old))
    fresh = store.blobs.stage().finish()
    assert store.blobs.sweep_staging() == 1
    assert not staged.path.exists() and fresh.path.exists()


def test_a_file_repeated_within_a_batch_links_to_its_first_copy(store: Store) -> None:
    """The original of a duplicate may be written in the same batch: it links to it, is
    recorded as a duplicate in its event, and is not queued."""
    for n in (0, 1, 0, 0):
        accept(store, n, filename=f"copy-{n}.xml")
    assert runner(store).process_batch() == 4
    with store.session() as session:
        docs = session.scalars(select(Document).order_by(Document.id)).all()
        first = docs[0].id
        assert [d.duplicate_of_id for d in docs] == [None, None, first, first]
        assert docs[2].status_reason == f"duplicate of document {first} (same file)"
        assert docs[3].status_reason == docs[2].status_reason
        queued = session.scalars(select(Delivery.document_id).order_by(Delivery.id)).all()
        assert queued == [docs[0].id, docs[1].id]
        created = session.scalars(
            select(Event.detail).where(Event.kind == "document_created").order_by(Event.id)
        ).all()
        assert [e["duplicate_of"] for e in created] == [None, None, first, first]


def test_a_batch_inserts_its_documents_in_one_statement_each_with_its_own_id(
    store: Store,
) -> None:
    """Rows alike in message, dossier, file and name (one file attached twice) still get
    their ids in the order they were made, the copy pointing back at the first."""
    msg = EmailMessage()
    msg["From"] = "supplier@example.com"
    msg["Message-ID"] = "<twice@example.com>"
    msg.set_content("attached twice")
    for name in ("same.xml", "same.xml", "other.xml"):
        data = INVOICE.replace(b"INV-2026-0042", b"INV-OTHER" if name == "other.xml" else b"X")
        msg.add_attachment(data, maintype="application", subtype="xml", filename=name)
    accept(store, 0)
    take(store, msg.as_bytes(), "supplier@example.com", held=True)
    accept(store, 1)
    inserts: list[str] = []
    event.listen(
        store.engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: inserts.append(sql) if "INSERT INTO documents" in sql else None,
    )
    assert runner(store).process_batch() == 3
    assert len(inserts) == 1
    with store.session() as session:
        docs = session.scalars(select(Document).order_by(Document.id)).all()
        names = ["inv-0.xml", "same.xml", "same.xml", "other.xml", "inv-1.xml"]
        assert [d.filename for d in docs] == names
        assert [d.duplicate_of_id for d in docs] == [None, None, docs[1].id, None, None]
        created = session.execute(
            select(Event.document_id, Event.detail)
            .where(Event.kind == "document_created")
            .order_by(Event.id)
        ).all()
        assert [(e.document_id, e.detail["duplicate_of"]) for e in created] == [
            (d.id, d.duplicate_of_id) for d in docs
        ]
