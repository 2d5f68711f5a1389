"""SIGKILL inside the rules stage's batch: nothing of the batch is committed, and after the
restart every message has exactly one document, delivered once.

The messages are accepted into the store before the daemon starts, so the first batch is full;
every other one is a blob row (as most mail is), the others blob files (as the SMTP door keeps
large mail). The documents' blobs are rows, made in the batch's transaction. `GW_CRASH_AT` kills
the daemon after the batch's blob files are published, or after every message of the batch is
written but before the commit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest
from integration.gateway_proc import DEMO_DROP, Gateway, base_config
from integration.servers import free_port
from sqlalchemy import func, select

from gateway.intake.accept import Envelope, accept_message, accept_spooled
from gateway.intake.spool import SpoolFile
from gateway.store.db import Store, open_store
from gateway.store.models import BlobRow, Document, Message

REPO = Path(__file__).resolve().parents[2]
INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()
ADDRESS = "demo@gateway.localhost"
MESSAGES = 24


def _mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "supplier@example.com"
    msg["To"] = ADDRESS
    msg["Subject"] = f"invoice {n}"
    msg["Message-ID"] = f"<crash-{n}@example.com>"
    msg.set_content("attached")
    data = INVOICE.replace(b"INV-2026-0042", f"INV-KILL-{n:03d}".encode())
    msg.add_attachment(data, maintype="application", subtype="xml", filename=f"inv-{n}.xml")
    return msg.as_bytes()


def _accept(store: Store, n: int) -> bytes:
    raw = _mail(n)
    envelope = Envelope("smtp", "supplier@example.com", [ADDRESS])
    if n % 2:
        spool = SpoolFile(store.blobs.spool_dir)
        spool.write(raw)
        accept_spooled(store, spool.finish(), envelope)
    else:
        accept_message(store, raw, envelope)
    return raw


def _rows(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(BlobRow)) or 0


def _sent(gateway: Gateway) -> list[dict[str, str]] | None:
    docs = gateway.docs()
    return docs if len(docs) >= MESSAGES and all(d["status"] == "sent" for d in docs) else None


@pytest.mark.parametrize("point", ["pipeline_blobs_published", "pipeline_before_commit"])
def test_sigkill_in_a_batch_redoes_it_whole_without_duplicates(
    tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon runs from a scratch directory: make it import this checkout's code.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    port = free_port()
    gateway = Gateway(tmp_path, base_config(port, DEMO_DROP, lease=3), port)
    gateway.cli("db", "upgrade")
    store = open_store(f"sqlite:///{tmp_path}/var/gateway.db", tmp_path / "var" / "blobs")
    raws = [_accept(store, n) for n in range(MESSAGES)]
    assert _rows(store) == MESSAGES // 2
    with open(gateway.log, "ab") as log:
        killed = subprocess.run(
            [sys.executable, "-m", "gateway", "-c", str(gateway.config), "run"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GW_CRASH_AT": point},
            timeout=60,
            check=False,
        )
    assert killed.returncode == -signal.SIGKILL, gateway.log_tail()
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 0
        assert session.scalars(select(Message).where(Message.processed_at.is_not(None))).all() == []
    assert _rows(store) == MESSAGES // 2  # no document's blob row outlived the kill
    gateway.start()
    try:
        docs = gateway.wait_for(lambda: _sent(gateway), timeout=60)
    finally:
        gateway.stop()
    assert sorted(d["filename"] for d in docs) == sorted(f"inv-{n}.xml" for n in range(MESSAGES))
    with store.session() as session:
        per_message = Counter(session.scalars(select(Document.message_id)))
        assert sorted(per_message.values()) == [1] * MESSAGES
        assert (
            session.scalars(select(Document).where(Document.duplicate_of_id.is_not(None))).all()
            == []
        )
    assert _rows(store) == MESSAGES // 2 + MESSAGES
    for n, raw in enumerate(raws):
        digest = hashlib.sha256(raw).hexdigest()
        assert store.blobs.get(digest) == raw
        assert store.blobs.path(digest).is_file() == bool(n % 2)
    drop = tmp_path / "var" / "outbox" / "Invoice_import"
    assert len(list(drop.iterdir())) == MESSAGES
    assert list((tmp_path / "var" / "blobs" / ".staging").iterdir()) == []
