"""Prometheus metrics, /livez and /readyz on a loopback port.

Names follow postfix_exporter's vocabulary with a `gateway_` prefix and base units. Labels are
low-cardinality by construction: intake door, reason code, document type and status,
integration name (configured by the office) — never an address or a file name. Counts that
live in the database (documents by type and status, the queue) are read at scrape time, so
they are right after a restart and across several instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from gateway import __version__
from gateway.store.db import Store
from gateway.store.models import Delivery, DeliveryState, Document, utcnow

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry()
MESSAGES_RECEIVED = Counter(
    "gateway_messages_received", "Messages accepted at a door.", ["intake"], registry=REGISTRY
)
MESSAGES_REFUSED = Counter(
    "gateway_messages_refused",
    "Refusals and temporary failures answered at a door, by reply code.",
    ["intake", "code"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "gateway_deliveries",
    "Delivery attempts by integration and outcome.",
    ["integration", "outcome"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "gateway_delivery_duration_seconds",
    "Time one delivery attempt took, by integration.",
    ["integration"],
    registry=REGISTRY,
)
INTAKE_SECONDS = Histogram(
    "gateway_intake_duration_seconds",
    "From end of data to a durable, committed message.",
    ["intake"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
Gauge("gateway_build_info", "Build of this gateway.", ["version"], registry=REGISTRY).labels(
    __version__
).set(1)

# In an SMTP listener process, intake counts go to the daemon, which serves /metrics for all.
_relay: Callable[[str], None] | None = None


def relay_to(send: Callable[[str], None]) -> None:
    """Send this process's intake counts through `send` instead of counting them here."""
    global _relay
    _relay = send


def received(intake: str, seconds: float) -> None:
    """A message accepted at a door, durable and committed `seconds` after its data ended."""
    if _relay is not None:
        _relay(f"received {intake} {seconds:.6f}")
        return
    MESSAGES_RECEIVED.labels(intake).inc()
    INTAKE_SECONDS.labels(intake).observe(seconds)


def refused(intake: str, code: str) -> None:
    """A refusal or temporary failure answered at a door, by its reply code (`550 5.7.1`)."""
    if _relay is not None:
        _relay(f"refused {intake} {code}")
        return
    MESSAGES_REFUSED.labels(intake, code).inc()


def replay(line: str) -> None:
    """Count here what a listener process relayed (a line `received` or `refused` wrote)."""
    kind, _, rest = line.partition(" ")
    intake, _, value = rest.partition(" ")
    if kind == "received":
        received(intake, float(value))
    elif kind == "refused":
        refused(intake, value)
    else:
        log.warning("metrics_relay_unknown", line=line[:80])


class StoreCollector(Collector):
    """Document and queue counts straight from the database at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        docs = GaugeMetricFamily(
            "gateway_documents", "Documents by type and status.", labels=["type", "status"]
        )
        queue = GaugeMetricFamily(
            "gateway_queue_deliveries", "Deliveries by queue state.", labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "gateway_queue_oldest_age_seconds", "Age of the oldest pending delivery."
        )
        with self.store.session() as session:
            rows = session.execute(
                select(Document.doc_type, Document.status, func.count()).group_by(
                    Document.doc_type, Document.status
                )
            )
            for doc_type, status, count in rows:
                docs.add_metric(
                    [doc_type.value if doc_type else "unrecognised", status.value], count
                )
            counts = dict(
                session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
            )
            for state in DeliveryState:
                queue.add_metric([state.value], counts.get(state, 0))
            first: datetime | None = session.scalar(
                select(func.min(Delivery.created_at)).where(
                    Delivery.state.in_(
                        [DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED]
                    )
                )
            )
        oldest.add_metric([], (utcnow() - first).total_seconds() if first else 0.0)
        yield from (docs, queue, oldest)


Check = Callable[[], str | None]


class HealthServer:
    """A tiny HTTP/1.0 server: /metrics, /livez (the loop answers), /readyz (checks pass)."""

    def __init__(self, store: Store, readiness: list[Check]) -> None:
        self.store = store
        self.readiness = readiness
        self.collector = StoreCollector(store)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        REGISTRY.register(self.collector)
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        if self._server is None:
            return
        REGISTRY.unregister(self.collector)
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
            status, body, kind = await self._route(path.split("?")[0])
            head = f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
            log.debug("health_request_failed", error=repr(exc))
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        plain = "text/plain; charset=utf-8"
        if path == "/metrics":
            body = await asyncio.to_thread(generate_latest, REGISTRY)
            return "200 OK", body, "text/plain; version=0.0.4; charset=utf-8"
        if path == "/livez":
            return "200 OK", b"ok\n", plain
        if path == "/readyz":
            problems = [p for p in await asyncio.to_thread(self._problems) if p]
            if problems:
                return "503 Service Unavailable", ("\n".join(problems) + "\n").encode(), plain
            return "200 OK", b"ok\n", plain
        return "404 Not Found", b"not found\n", plain

    def _problems(self) -> list[str | None]:
        return [self._database(), *(check() for check in self.readiness)]

    def _database(self) -> str | None:
        try:
            with self.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database: {type(exc).__name__}"
        return None
