"""The delivery workers alone: 1,000 documents already queued in SQLite, drained to a real sshd.

No SMTP and no rules stage: this shows what delivery itself sustains. The runner is the
daemon's own `DeliveryRunner` with the daemon's default settings; the clock runs from the
runner's start until every delivery is `sent`. Besides documents/s (noisy on a shared
machine) it reports what does not depend on load: CPU per document of this process and of
sshd, database commits and SFTP requests per document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asyncssh.sftp import SFTPClientHandler
from sqlalchemy import event, func, select

from bench.common import start_sshd, table
from gateway.config import DeliverySettings
from gateway.logging import configure
from gateway.outbound import queue
from gateway.outbound.worker import DeliveryRunner
from gateway.store import blob_rows
from gateway.store.db import Store, open_store, upgrade
from gateway.store.models import Delivery, DeliveryState, DocType, Document, Dossier, Integration

DOCUMENT = b"<?xml version='1.0'?><Invoice>" + b"x" * 1800 + b"</Invoice>\n"
TICK = os.sysconf("SC_CLK_TCK")


class Counts:
    """Commits on the engine and SFTP requests sent, counted while the runner drains."""

    def __init__(self) -> None:
        self.commits = 0
        self.requests = 0


def _queue(store: Store, options: dict[str, Any], count: int) -> None:
    settings = DeliverySettings()
    with store.session.begin() as session:
        integration = Integration(name="drop", kind="sftp", options=options)
        dossier = Dossier(slug="bench", integration=integration, vat_number="BE0123456749")
        for n in range(count):
            data = DOCUMENT.replace(b"<Invoice>", f"<Invoice n='{n}'>".encode())
            digest = hashlib.sha256(data).hexdigest()
            blob_rows.insert(session.connection(), [(digest, data)])
            doc = Document(
                dossier=dossier,
                filename=f"drain-{n}.xml",
                media_type="application/xml",
                blob_sha256=digest,
                size=len(data),
                doc_type=DocType.PURCHASE_INVOICE,
            )
            session.add(doc)
            session.flush()
            queue.send(session, doc, settings)


# Polled on the loop through one kept connection: the poll is the benchmark's own work, and
# a session and a thread hand-off per poll would show up as the gateway's CPU.
_SENT = select(func.count()).where(Delivery.state == DeliveryState.SENT)


def _sent(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(_SENT).scalar_one())


def _tree(root: int) -> Iterator[int]:
    """`root` and every process below it (sshd forks a process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    todo = [root]
    while todo:
        pid = todo.pop()
        yield pid
        todo.extend(children.get(pid, []))


def _cpu_seconds(pids: Iterator[int]) -> float:
    """utime+stime (and reaped children's) of `pids`, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / TICK


async def _drain(store: Store, count: int, counts: Counts, sshd_pid: int) -> dict[str, float]:
    runner = DeliveryRunner(store, DeliverySettings())
    original = SFTPClientHandler._send_request

    def counted(self: Any, *args: Any) -> None:
        counts.requests += 1
        original(self, *args)

    SFTPClientHandler._send_request = counted  # type: ignore[method-assign]
    cpu, sshd_cpu, started = time.process_time(), _cpu_seconds(_tree(sshd_pid)), time.monotonic()
    task = asyncio.create_task(runner.run())
    try:
        deadline = started + 600
        while _sent(store) < count and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        used = time.process_time() - cpu
        sshd_used = _cpu_seconds(_tree(sshd_pid)) - sshd_cpu
    finally:
        SFTPClientHandler._send_request = original  # type: ignore[method-assign]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {"seconds": seconds, "cpu": used, "sshd": sshd_used}


def run(workdir: Path, count: int) -> str:
    # The daemon's production logging (a JSON line per event, its cost included), discarded.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        configure("info", "json")
        return _run(workdir, count)


def _run(workdir: Path, count: int) -> str:
    sshd = start_sshd(workdir / "sshd")
    store = open_store(f"sqlite:///{workdir}/drain.db", workdir / "blobs")
    try:
        upgrade(store.engine)
        options = {
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
            "upload_path": "Drain_import/",
        }
        _queue(store, options, count)
        counts = Counts()
        event.listen(
            store.engine, "commit", lambda _conn: setattr(counts, "commits", counts.commits + 1)
        )
        figures = asyncio.run(_drain(store, count, counts, sshd.pid))
        sent = _sent(store)
        landed = len(list((sshd.root / "Drain_import").glob("*.xml")))
    finally:
        store.engine.dispose()
        sshd.stop()
    rows = [
        ["documents/s", f"{count / figures['seconds']:.1f}"],
        ["gateway CPU per document (ms)", f"{1000 * figures['cpu'] / count:.2f}"],
        ["sshd CPU per document (ms)", f"{1000 * figures['sshd'] / count:.2f}"],
        ["database commits per document", f"{counts.commits / count:.2f}"],
        ["SFTP requests per document", f"{counts.requests / count:.2f}"],
        ["sent / files on the server (expected)", f"{sent} / {landed} ({count})"],
    ]
    return table([f"delivery workers draining {count} queued documents to sshd", "value"], rows)
