"""The rules stage alone: small Peppol invoice mails already accepted, drained by the runner.

Messages are accepted into a SQLite store the way a door does, then the stage drains them in
this process. Two ways in, as in production: `row`, the way of nearly all mail (the raw bytes
a blob row committed with the message's, in group commits of `GROUP` as the SMTP door makes
them), and `file`, the SMTP door's way for mail past the row limit (spooled to a file, fsync'd,
adopted as a blob file; the stage reads the file). Figures per message: CPU
time (user + system of the process while draining), fsyncs (file and directory) and
database commits, counted by wrapping `os.fsync` and listening to the engine's commits.
Wall time and documents/s are shown too, but on a shared machine CPU and counts are the
figures to compare.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import event, func, select

from bench.common import INTAKE_ADDRESS, REPO, table
from gateway.config import DeliverySettings, DossierSettings, IntegrationEntry
from gateway.intake.accept import Envelope, accept_spooled, commit_arrivals, hold
from gateway.intake.spool import Held, SpoolFile
from gateway.logging import configure
from gateway.office import put_dossier, put_integration
from gateway.pipeline.runner import PipelineRunner
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Document

INVOICE = (REPO / "tests" / "data" / "purchase-invoice-demo.xml").read_bytes()
MAX_ROUNDS = 100_000
WAYS = ("row", "file")
# Arrivals per group commit when the bytes are rows: about what the door commits together
# at a few hundred messages per second.
GROUP = 16
ENVELOPE = Envelope("smtp", "s@example.com", [INTAKE_ADDRESS])


def _mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "supplier@example.com"
    msg["To"] = INTAKE_ADDRESS
    msg["Subject"] = f"invoice {n}"
    msg["Message-ID"] = f"<rules-{n}-{os.getpid()}@bench>"
    msg.set_content("Invoice attached.")
    data = INVOICE.replace(b"INV-2026-0042", f"INV-RULES-{n:05d}".encode())
    msg.add_attachment(data, maintype="application", subtype="xml", filename=f"inv-{n}.xml")
    return msg.as_bytes()


def _store(workdir: Path) -> Store:
    store = open_store(f"sqlite:///{workdir}/gateway.db", workdir / "blobs")
    upgrade(store.engine)
    with store.session.begin() as session:
        drop = IntegrationEntry("drop", "directory", {"path": str(workdir / "outbox")})
        put_integration(session, drop, "bench")
        spec = DossierSettings(
            "bench", "drop", vat="BE0123456749", addresses=[INTAKE_ADDRESS], auto_send=True
        )
        put_dossier(session, spec)
    return store


def accept(store: Store, mails: list[bytes], way: str) -> None:
    """Store `mails` as a door does: as blob `row`s, or each as a blob `file`."""
    if way == "file":
        for raw in mails:
            spool = SpoolFile(store.blobs.spool_dir)
            spool.write(raw)
            accept_spooled(store, spool.finish(), ENVELOPE)
        return
    for start in range(0, len(mails), GROUP):
        arrivals = [hold(raw, Held.of(raw), ENVELOPE) for raw in mails[start : start + GROUP]]
        commit_arrivals(store, arrivals)


@contextmanager
def _counted(store: Store) -> Iterator[dict[str, int]]:
    """Count fsyncs and commits while the block runs."""
    counts = {"fsync": 0, "commit": 0}
    real_fsync = os.fsync

    def fsync(fd: Any) -> None:
        counts["fsync"] += 1
        real_fsync(fd)

    def commit(_conn: Any) -> None:
        counts["commit"] += 1

    os.fsync = fsync
    event.listen(store.engine, "commit", commit)
    try:
        yield counts
    finally:
        os.fsync = real_fsync
        event.remove(store.engine, "commit", commit)


def drain(store: Store, messages: int) -> dict[str, float]:
    """Run the stage until every message is processed; figures for the whole drain."""
    runner = PipelineRunner(store, DeliverySettings(), asyncio.Event())
    with _counted(store) as counts:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(MAX_ROUNDS):
            if not runner.process_batch():
                break
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    with store.session() as session:
        docs = session.scalar(select(func.count()).select_from(Document)) or 0
    return {
        "docs": docs,
        "docs_s": docs / wall,
        "cpu_ms": 1000 * cpu / messages,
        "fsync": counts["fsync"] / messages,
        "commit": counts["commit"] / messages,
    }


def run(workdir: Path, messages: int = 1000, trials: int = 2, ways: tuple[str, ...] = WAYS) -> str:
    """`trials` drains of `messages` for each way in (`WAYS`), trials of the ways interleaved."""
    configure("info", "json")
    log = (workdir / "gateway.log").open("w")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(log))
    rows = []
    for trial in range(trials):
        for way in ways:
            found = _trial(workdir / f"trial-{trial}-{way}", messages, way)
            rows.append(_row(trial, way, messages, found))
    header = ["trial", "raw in", "messages", "documents", "docs/s", "CPU ms/msg", "fsyncs/msg"]
    return table([*header, "commits/msg"], rows)


def _trial(here: Path, messages: int, way: str) -> dict[str, float]:
    here.mkdir(parents=True)
    store = _store(here)
    accept(store, [_mail(n) for n in range(messages)], way)
    found = drain(store, messages)
    store.engine.dispose()
    return found


def _row(trial: int, way: str, messages: int, found: dict[str, float]) -> list[object]:
    return [
        trial + 1,
        way,
        messages,
        int(found["docs"]),
        f"{found['docs_s']:.0f}",
        f"{found['cpu_ms']:.2f}",
        f"{found['fsync']:.2f}",
        f"{found['commit']:.3f}",
    ]
