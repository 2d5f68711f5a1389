"""SMTP intake throughput: the real SMTP door (aiosmtpd, SQLite with synchronous=FULL, fsync'd
blobs) on a loopback port, N messages with a small PDF over C parallel connections.

    .venv/bin/python bench/intake_smtp.py [N] [C]

Prints messages per second. A figure for comparison between versions, never a test.
"""

from __future__ import annotations

import asyncio
import smtplib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from gateway import office
from gateway.config import DossierSettings, SmtpSettings
from gateway.intake.smtpd import door as smtpd
from gateway.store.db import open_store, upgrade


def _mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "client@example.com"
    msg["To"] = "acme@docs.office.example"
    msg["Subject"] = f"invoice {i}"
    msg["Message-ID"] = f"<{i}.{time.time_ns()}@example.com>"
    msg.set_content("attached")
    msg.add_attachment(
        b"%PDF-1.4\n" + b"x" * 50_000,
        maintype="application",
        subtype="pdf",
        filename=f"inv-{i}.pdf",
    )
    return msg.as_bytes(policy=SMTP)


def main(total: int, connections: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    store = open_store(f"sqlite:///{workdir}/gw.db", workdir / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        office.put_dossier(
            session,
            DossierSettings(
                slug="acme", integration="none", addresses=["acme@docs.office.example"]
            ),
        )
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    settings = SmtpSettings(port=0)
    server = asyncio.run_coroutine_threadsafe(
        smtpd.start(settings, store, lambda: None), loop
    ).result()
    port = server.sockets[0].getsockname()[1]
    mails = [_mail(i) for i in range(total)]

    def send(chunk: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for raw in chunk:
                client.sendmail("client@example.com", ["acme@docs.office.example"], raw)

    chunks = [mails[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, chunks))
    elapsed = time.perf_counter() - started
    print(f"{total} messages over {connections} connections: {total / elapsed:.0f} msg/s")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 4
    )
