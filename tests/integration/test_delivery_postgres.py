"""Two gateway processes on one PostgreSQL share one queue: every document reaches the
package exactly once, counted at the receiver (a real HTTP API that logs every request)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
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


def _config(url: str, state_dir: Path, port: int, lease: float = 30.0) -> str:
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
lease = {lease}
retry_initial = 0.5
retry_max = 1.0
"""


def _queue_documents(
    url: str, state_dir: Path, api: PackageApi, secret: Path, count: int = COUNT
) -> None:
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
        for i in range(count):
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


def _gateway(tmp_path: Path, name: str, url: str, shared: Path, lease: float) -> Gateway:
    workdir = tmp_path / name
    workdir.mkdir()
    port = free_port()
    return Gateway(workdir, _config(url, shared, port, lease), port)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_stalled_instance_that_lost_its_lease_cannot_overwrite_the_new_owner(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create_database("stalled_instance")
    shared = tmp_path / "shared-state"
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    api = PackageApi(delay=2.0)
    api.start()
    stalled = _gateway(tmp_path, "stalled", url, shared, lease=1.0)
    rescuer = _gateway(tmp_path, "rescuer", url, shared, lease=1.0)
    try:
        _queue_documents(url, shared, api, secret, count=1)
        stalled.start()
        _wait(lambda: len(api.attempts) == 1, "the first instance's request")
        assert stalled.proc is not None
        stalled.proc.send_signal(signal.SIGSTOP)  # a VM pause, a swap storm: past its lease
        api.delay = 0.0
        rescuer.start()
        _wait(lambda: '"event": "delivered"' in rescuer.log.read_text(), "the rescuer")
        stalled.proc.send_signal(signal.SIGCONT)
        _wait(lambda: "attempt_superseded" in stalled.log.read_text(), "the stale outcome")
    finally:
        if stalled.proc is not None:
            stalled.proc.send_signal(signal.SIGCONT)
        stalled.stop()
        rescuer.stop()
        api.stop()

    (key,) = api.resources
    assert api.attempts == [key, key], "both attempts must carry the same Idempotency-Key"
    store = open_store(url, shared / "blobs")
    try:
        with store.session() as session:
            (delivery,) = session.scalars(select(Delivery)).all()
            assert delivery.state is DeliveryState.SENT
            events = {e.kind: e.detail for e in session.scalars(select(Event).order_by(Event.id))}
            attempts = session.scalars(
                select(Event.detail).where(Event.kind == "delivery_attempt")
            ).all()
    finally:
        store.engine.dispose()
    assert len(attempts) == 1
    assert attempts[0]["attempt"] == delivery.attempt_id
    assert attempts[0]["uncertain"] == "yes"
    superseded = events["attempt_superseded"]
    assert superseded["outcome"] == "sent"
    assert superseded["attempt"] != delivery.attempt_id
    assert events["delivery_uncertain"]["previous_attempt"] == superseded["attempt"]
