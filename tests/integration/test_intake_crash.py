"""Invariant 1 under SIGKILL with many sessions at once: every `250` survives, byte for byte.

Sixteen clients send as fast as the gateway takes them, some messages big enough to cross
many DATA chunks, so group commits are in flight when the process is killed. After a restart,
each message that was answered `250` must have its row and a blob holding exactly the bytes
the client sent (after SMTP's dot-unstuffing, i.e. what smtplib was given).
"""

from __future__ import annotations

import hashlib
import smtplib
import sqlite3
import threading
import time
from pathlib import Path

from integration.gateway_proc import Gateway, start_gateway

DOSSIER = """
[[integrations]]
name = "drop"
kind = "directory"
path = "var/outbox"

[[dossiers]]
slug = "demo"
vat = "BE0123456749"
addresses = ["demo@gateway.localhost"]
integration = "drop"
"""
CLIENTS = 16
ACKED_BEFORE_KILL = 60
TIMEOUT = 60.0


def _message(client: int, n: int) -> bytes:
    """Small, or (every third) past the spool's FLUSH_SIZE: the two ways to durable bytes."""
    body = b"".join(b".line %d of a message\r\n" % i for i in range(30 if n % 3 else 60_000))
    head = f"From: c{client}@example.com\r\nMessage-ID: <c{client}-n{n}@crash.test>\r\n"
    return head.encode() + b"Subject: crash test\r\n\r\n" + body


def _client(port: int, client: int, acked: list[bytes], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        raw = _message(client, n)
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.sendmail(f"c{client}@example.com", ["demo@gateway.localhost"], raw)
        except (OSError, smtplib.SMTPException):
            return  # the gateway died under us: this message was not acknowledged
        acked.append(raw)
        n += 1


def _stored(gateway: Gateway) -> dict[str, tuple[str, bytes | None]]:
    """Message-ID → raw sha256 of every row, and the raw bytes when they are a blob row, read
    from the database file itself."""
    db = sqlite3.connect(f"file:{gateway.workdir / 'var' / 'gateway.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT m.message_id, m.raw_sha256, b.data FROM messages m"
            " LEFT JOIN blobs b ON b.sha256 = m.raw_sha256"
        ).fetchall()
        return {message_id: (digest, held) for message_id, digest, held in rows}
    finally:
        db.close()


def test_sigkill_during_concurrent_intake_keeps_every_acknowledged_message(
    tmp_path: Path,
) -> None:
    gateway = start_gateway(tmp_path, DOSSIER)
    acked: list[bytes] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client, args=(gateway.port, c, acked, stop), daemon=True)
        for c in range(CLIENTS)
    ]
    try:
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + TIMEOUT
        while len(acked) < ACKED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        gateway.kill()
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
        assert len(acked) >= ACKED_BEFORE_KILL, gateway.log_tail()
        gateway.start()
        stored = _stored(gateway)
    finally:
        stop.set()
        gateway.stop()
    blobs = tmp_path / "var" / "blobs"
    for raw in acked:
        message_id = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        digest = hashlib.sha256(raw).hexdigest()
        assert message_id in stored, f"{message_id} got 250 but is not stored"
        stored_digest, held = stored[message_id]
        assert stored_digest == digest
        kept = held if held is not None else (blobs / digest[:2] / digest).read_bytes()
        assert kept == raw
