"""Two gateway processes on one PostgreSQL share one queue: every document reaches the
package exactly once, counted at the receiver (a real HTTP API that logs every request)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from integration.gateway_proc import Gateway
from integration.package_api import SECRET, PackageApi
from integration.servers import Postgres, free_port
from sqlalchemy import func, select

from gateway.config import DeliverySettings
from gateway.outbound import queue
from gateway.store.db import open_store, upgrade
from gateway.store.models import (
    Delivery,
    DeliveryState,
    DocType,
    Document,
    Dossier,
    Event,
    Integration,
)

COUNT = 1000


def _config(url: str, state_dir: Path, port: int) -> str:
    return f"""
[gateway]
state_dir = "{state_dir}"
log_format = "json"
log_level = "info"

[database]
url = "{url}"

[smtp]
host = "127.0.0.1"
port = {port}

[delivery]
workers = 4
poll_interval = 0.2
lease = 30.0
retry_initial = 0.5
retry_max = 1.0
"""


def _queue_documents(url: str, state_dir: Path, api: PackageApi, secret: Path) -> None:
    store = open_store(url, state_dir / "blobs")
    upgrade(store.engine)
    settings = DeliverySettings()
    with store.session.begin() as session:
        integration = Integration(
            name="api",
            kind="http",
            options={"url": api.url, "secret_file": str(secret), "concurrency": 3},
        )
        dossier = Dossier(slug="acme", integration=integration, vat_number="BE0123456749")
        for i in range(COUNT):
            data = f"<Invoice><ID>PG-{i}</ID></Invoice>".encode()
            doc = Document(
                dossier=dossier,
                filename=f"pg-{i}.xml",
                media_type="application/xml",
                blob_sha256=store.blobs.put(data),
                size=len(data),
                doc_type=DocType.PURCHASE_INVOICE,
            )
            session.add(doc)
            session.flush()
            queue.send(session, doc, settings)
    store.engine.dispose()


def test_two_gateways_on_one_postgres_deliver_1000_documents_exactly_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create_database("two_gateways")
    shared = tmp_path / "shared-state"  # the blob store both instances mount
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    api = PackageApi()
    api.start()
    gateways: list[Gateway] = []
    try:
        _queue_documents(url, shared, api, secret)
        for name in ("one", "two"):
            workdir = tmp_path / name
            workdir.mkdir()
            port = free_port()
            gateways.append(Gateway(workdir, _config(url, shared, port), port))
        for gateway in gateways:
            gateway.start()
        deadline = time.monotonic() + 180
        while len(api.resources) < COUNT:
            assert all(g.alive() for g in gateways), gateways[0].log_tail()
            assert time.monotonic() < deadline, f"{len(api.resources)} of {COUNT} delivered"
            time.sleep(0.2)
        for gateway in gateways:
            assert gateway.stop() == 0
    finally:
        for gateway in gateways:
            gateway.stop()
        api.stop()

    per_key = Counter(api.attempts)
    assert len(per_key) == COUNT
    assert set(per_key.values()) == {1}, "a document was posted twice"
    store = open_store(url, shared / "blobs")
    try:
        with store.session() as session:
            states = Counter(session.scalars(select(Delivery.state)))
            assert states == {DeliveryState.SENT: COUNT}
            attempts = session.scalars(
                select(Event.detail).where(Event.kind == "delivery_attempt")
            ).all()
            assert Counter(a["outcome"] for a in attempts) == {"sent": COUNT}
            superseded = session.scalar(
                select(func.count()).where(Event.kind == "attempt_superseded")
            )
            assert superseded == 0
    finally:
        store.engine.dispose()
    logs = [g.log.read_text() for g in gateways]
    delivered = [log.count('"event": "delivered"') for log in logs]
    assert sum(delivered) == COUNT
    assert all(n > 0 for n in delivered), f"one instance did all the work: {delivered}"
